"""Time several callables side by side, interleaved, so that a shared machine's load hits them all alike.

A single `torch.utils.benchmark.Timer` per callable measures each in its own window; on a machine where other
jobs come and go, two windows see different loads and their ratio is noise. Here every round times a block of
calls of each callable, in a rotating order, and a ratio is the median over rounds of the ratio within a round.
"""

import resource
import statistics
import time
from collections.abc import Callable

import torch


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for `device`'s queued work, so that wall time covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class InterleavedTimer:
    """Per-call seconds of each named callable, over `rounds` rounds of blocks of about `block_s` seconds.

    Args:
        functions: name -> callable taking no arguments.
        rounds: number of rounds; each round times one block of every callable.
        block_s: target duration of a block; the number of calls per block is chosen once, by the slowest
            callable, so that every callable runs the same number of calls.
        warmup: calls of each callable before calibration.
        sync: called before and after every block (see `synchronizer`).
    """

    def __init__(
        self,
        functions: dict[str, Callable[[], object]],
        rounds: int = 21,
        block_s: float = 0.05,
        warmup: int = 3,
        sync: Callable[[], None] = lambda: None,
    ):
        self.functions = functions
        self.rounds = rounds
        self.block_s = block_s
        self.warmup = warmup
        self.sync = sync
        self.seconds: dict[str, list[float]] = {name: [] for name in functions}
        self.page_faults: dict[str, list[float]] = {name: [] for name in functions}

    def _time_block(self, function: Callable[[], object], calls: int) -> tuple[float, float]:
        """Seconds and minor page faults per call, over a block of `calls` calls."""
        self.sync()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(calls):
            function()
        self.sync()
        seconds = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        return seconds / calls, faults / calls

    def run(self) -> "InterleavedTimer":
        for function in self.functions.values():
            for _ in range(self.warmup):
                function()
        slowest = max(self._time_block(function, 1)[0] for function in self.functions.values())
        calls = max(1, round(self.block_s / slowest))
        names = list(self.functions)
        for r in range(self.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                seconds, faults = self._time_block(self.functions[name], calls)
                self.seconds[name].append(seconds)
                self.page_faults[name].append(faults)
        return self

    def median(self, name: str) -> float:
        """Median over rounds of the per-call seconds of `name`."""
        return statistics.median(self.seconds[name])

    def median_page_faults(self, name: str) -> float:
        """Median over rounds of the minor page faults per call of `name` (memory the kernel had to map again)."""
        return statistics.median(self.page_faults[name])

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median over rounds of time(numerator) / time(denominator) measured in the same round."""
        pairs = zip(self.seconds[numerator], self.seconds[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)
