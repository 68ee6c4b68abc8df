"""Tiny training runs as subprocesses that the reliability tests start, kill, signal and resume, and the
comparison of two runs' training states file by file."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil  # a dependency of accelerate
import torch
from accelerate.utils import load as accelerate_load
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "training" / "train.py"
FAULTY_TRAIN = ROOT / "tests" / "faulty_train.py"
ONE_PROCESS = (sys.executable,)
# As in test_train_e2e: `accelerate launch --multi_gpu` starts torchrun; without GPUs the processes join over gloo.
TWO_PROCESSES = (
    *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
    *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
)
STEPS = 8
# Every periodic action happens (samples at 4 draw noise that must not disturb training's); all checkpoints kept.
# Float32 given: on a CPU with native bf16 `auto` measures both precisions at start-up, and two runs started side
# by side (the uninterrupted one and the killed one) may choose differently; a resumed run keeps its checkpoint's.
TINY_RUN = [
    "--report_to", "none", "--mixed_precision", "no",
    "--max_train_samples", "96", "--train_batch_size", "8", "--num_train_timesteps", "20",
    "--lr_warmup_steps", "2", "--random_flip", "--num_samples", "4", "--num_inference_steps", "5",
    "--num_eval_images", "8", "--final_eval_timesteps", "3", "--sample_every", "4", "--eval_every", "0",
    "--checkpointing_steps", "2", "--checkpoints_total_limit", "10", "--max_train_steps", str(STEPS),
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Run:
    """A training subprocess in a session of its own (a signal to it never reaches pytest), its output in a log
    file (tqdm writes more than a pipe holds)."""

    def __init__(
        self, output_dir: Path, *extra: str, launcher=ONE_PROCESS, script: Path = TRAIN, env=None, base=TINY_RUN
    ):
        self.output_dir = output_dir
        self.log = output_dir.parent / f"{output_dir.name}-{time.monotonic_ns()}.log"
        if launcher == TWO_PROCESSES:  # not accelerate's fixed 29500: other runs may be launching beside this one
            launcher = (*launcher, "--main_process_port", str(free_port()))
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [*launcher, str(script), *base, "--output_dir", str(output_dir), *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_all(signal.SIGKILL)
            raise

    def output(self) -> str:
        return self.log.read_text()

    def last_line(self) -> str:
        return self.output().strip().splitlines()[-1]

    def wait_for(self, path: Path, timeout: float = 300) -> None:
        """Until `path` exists; fails if the run ends first."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert self.process.poll() is None, f"the run ended before {path} appeared:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"no {path} after {timeout} s"
            time.sleep(0.02)

    def kill_all(self, signal_number: int) -> None:
        """Signal every process of the run, as the machine going down does: the launcher and the workers (which
        torchrun starts in sessions of their own, so that a Ctrl-C reaches them only through the launcher)."""
        processes = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        for process in processes:
            try:
                process.send_signal(signal_number)
            except psutil.NoSuchProcess:
                pass

    def workers(self) -> list[int]:
        """Pids of the training processes that a launcher started."""
        children = psutil.Process(self.process.pid).children(recursive=True)
        return [child.pid for child in children if str(TRAIN) in child.cmdline()]

    def finish(self, expect: int = 0) -> "Run":
        """Wait for the run to end with exit status `expect`."""
        status = self.wait()
        assert status == expect, f"exit status {status}, expected {expect}:\n{self.output()[-3000:]}"
        return self


def run(output_dir: Path, *extra: str, launcher=ONE_PROCESS, expect: int = 0, **kwargs) -> Run:
    return Run(output_dir, *extra, launcher=launcher, **kwargs).finish(expect)


def load_any(path: Path):
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix == ".json":  # without diffusers' bookkeeping, e.g. _use_default_values in set order
        return {key: value for key, value in json.loads(path.read_text()).items() if not key.startswith("_")}
    return accelerate_load(path)  # optimizer, lr schedule, RNG states: with the loader resuming uses


def assert_equal(first, second, where: str) -> None:
    """Bitwise equality of nested checkpoint contents (tensors, arrays, dicts, lists, numbers)."""
    if isinstance(first, torch.Tensor):
        assert first.dtype == second.dtype and torch.equal(first, second), where
    elif isinstance(first, np.ndarray):
        assert np.array_equal(first, second), where
    elif isinstance(first, dict):
        assert first.keys() == second.keys(), where
        for key in first:
            assert_equal(first[key], second[key], f"{where}[{key!r}]")
    elif isinstance(first, list | tuple):
        assert len(first) == len(second), where
        for i, (a, b) in enumerate(zip(first, second, strict=True)):
            assert_equal(a, b, f"{where}[{i}]")
    else:
        assert first == second, f"{where}: {first!r} != {second!r}"


def assert_same_training_state(expected: Path, actual: Path) -> None:
    """Two output folders end in the same state: every file of the last checkpoint (weights, optimizer, lr
    schedule, EMA, counters, each process's RNG) and the saved pipeline's weights, bitwise."""
    last = f"checkpoint-{STEPS}"
    names = sorted(p.name for p in (expected / last).iterdir())
    assert names == sorted(p.name for p in (actual / last).iterdir())
    assert {"model.safetensors", "optimizer.bin", "ema.safetensors", "ema.json"} <= set(names)  # weights, Adam, EMA
    for name in names:
        first, second = load_any(expected / last / name), load_any(actual / last / name)
        if name == "training_progress.json":  # the wall time differs, the counters must not
            first.pop("wall_time_s"), second.pop("wall_time_s")
        assert_equal(first, second, f"{last}/{name}")
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert_equal(load_file(expected / weights), load_file(actual / weights), weights)


def partial_saves(output_dir: Path) -> list[str]:
    return sorted(p.name for p in output_dir.glob(".partial-*"))
