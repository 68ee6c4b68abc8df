"""How many CPU threads torch uses: every core by default, also under `accelerate launch`.

`accelerate launch` exports OMP_NUM_THREADS=1 to a single CPU process unless `--num_cpu_threads_per_process` is
given (it only splits the physical cores when `--cpu` or a config asks for the CPU), which would leave a plain
`accelerate launch training/train.py` on one core. Here that default is told apart from a choice: a count the
user exported before the launcher, or passed as `--num_cpu_threads_per_process`, is kept; the launcher's own
default is replaced by the cores torch would use without it, split between the processes of this machine.
"""

import os
from dataclasses import dataclass

import psutil
import torch

LAUNCHER_THREADS_OPTION = "--num_cpu_threads_per_process"


@dataclass
class ThreadChoice:
    """The intra-op threads of this process and why: kept as chosen ("OMP_NUM_THREADS",
    "--num_cpu_threads_per_process") or "every core" (the usable cores split between this machine's processes)."""

    threads: int
    reason: str

    def describe(self) -> str:
        return f"{self.threads} CPU thread(s) per process ({self.reason})"


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask), which is what OpenMP and torch default to."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def launcher_thread_request(parent: psutil.Process | None = None) -> str | None:
    """If the parent process is `accelerate launch`: how its OMP_NUM_THREADS came about, "option" (passed as
    --num_cpu_threads_per_process), "environment" (exported before the launcher) or "default" (the launcher's
    own choice). None when the parent is not accelerate's launcher or cannot be read."""
    try:
        parent = parent or psutil.Process().parent()
        if parent is None:
            return None
        command = parent.cmdline()
        head = [os.path.basename(part) for part in command[:3]]
        launcher = {"accelerate-launch", "accelerate.commands.launch"} & set(head) or (
            "accelerate" in head and "launch" in command[:4]
        )
        if not launcher:
            return None
        if any(part.split("=")[0] == LAUNCHER_THREADS_OPTION for part in command):
            return "option"
        return "environment" if "OMP_NUM_THREADS" in parent.environ() else "default"
    except (psutil.Error, OSError):
        return None


def configure_cpu_threads(environ: dict[str, str] | None = None, parent: psutil.Process | None = None) -> ThreadChoice:
    """Set torch's intra-op threads: a count the user chose is kept, otherwise every usable core divided by the
    processes on this machine (LOCAL_WORLD_SIZE). Returns what was chosen, for the first log line."""
    environ = os.environ if environ is None else environ
    if "OMP_NUM_THREADS" in environ:
        request = launcher_thread_request(parent)
        if request == "option":
            return ThreadChoice(torch.get_num_threads(), LAUNCHER_THREADS_OPTION)
        if request != "default":
            return ThreadChoice(torch.get_num_threads(), "OMP_NUM_THREADS")
    local_processes = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = max(1, usable_cores() // local_processes)
    torch.set_num_threads(threads)
    return ThreadChoice(threads, f"every core: {usable_cores()} core(s), {local_processes} process(es) here")
