"""SIGTERM (a scheduler's pre-emption notice) and SIGINT (Ctrl-C) stop training at the next step boundary.

The handler only records the signal; the loop asks `agreed_signal` after each optimizer step, saves a checkpoint
of that step and raises TrainingInterrupted. With several processes the signal is agreed by a collective every
step, so all of them stop after the same step even when only one was signalled.
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after saving a checkpoint; the exit status is the shell's 128 + signal."""

    def __init__(self, signal_number: int, step: int, checkpoint: str):
        name = signal.Signals(signal_number).name
        super().__init__(
            f"Stopped by {name} after step {step}; checkpoint saved to {checkpoint}. "
            "Continue with --resume_from_checkpoint latest."
        )
        self.exit_status = 128 + signal_number


class StopSignals:
    """Records the first SIGTERM or SIGINT while `handling()` is active."""

    def __init__(self):
        self.received = 0

    def _record(self, signal_number: int, frame) -> None:
        # No logging here: the handler may run while the logging lock is held.
        self.received = self.received or signal_number

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Install the handlers, and restore the previous ones on exit. Python runs handlers in the main thread
        only, so elsewhere (training started from a thread) the signals keep their default effect."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self._record) for number in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def agreed_signal(self, accelerator: Accelerator) -> int:
        """The signal any process has received, or 0; every process must call it at the same step."""
        if accelerator.num_processes == 1:
            return self.received
        received = accelerator.gather(torch.tensor([self.received], device=accelerator.device))
        return int(received.max())


stop_signals = StopSignals()  # signal handlers belong to the process, so there is one
