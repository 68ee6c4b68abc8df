"""Every core by default: accelerate launch's default of one thread is replaced, a chosen count is kept."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simple_ddpm.cpu_threads import configure_cpu_threads, launcher_thread_request, usable_cores

ROOT = Path(__file__).resolve().parents[1]


class FakeProcess:
    """What `launcher_thread_request` reads of the parent process: its command line and initial environment."""

    def __init__(self, command: list[str], environ: dict[str, str]):
        self.command, self.initial_environ = command, environ

    def cmdline(self) -> list[str]:
        return self.command

    def environ(self) -> dict[str, str]:
        return self.initial_environ


LAUNCHER = ["/venv/bin/python", "/venv/bin/accelerate", "launch", "training/train.py"]


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_launcher_default_is_told_apart_from_an_option_and_an_exported_count():
    assert launcher_thread_request(FakeProcess(LAUNCHER, {"PATH": "/bin"})) == "default"
    with_option = [*LAUNCHER[:3], "--num_cpu_threads_per_process", "1", *LAUNCHER[3:]]
    assert launcher_thread_request(FakeProcess(with_option, {})) == "option"
    with_equals = [*LAUNCHER[:3], "--num_cpu_threads_per_process=1", *LAUNCHER[3:]]
    assert launcher_thread_request(FakeProcess(with_equals, {})) == "option"
    assert launcher_thread_request(FakeProcess(LAUNCHER, {"OMP_NUM_THREADS": "1"})) == "environment"
    assert launcher_thread_request(FakeProcess(["bash", "-c", "python train.py"], {})) is None


def test_launcher_default_of_one_thread_becomes_every_core():
    torch.set_num_threads(1)
    choice = configure_cpu_threads({"OMP_NUM_THREADS": "1"}, FakeProcess(LAUNCHER, {}))
    assert choice.threads == usable_cores() == torch.get_num_threads()
    assert "every core" in choice.describe()


def test_cores_are_split_between_the_processes_of_this_machine():
    choice = configure_cpu_threads({"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}, FakeProcess(LAUNCHER, {}))
    assert choice.threads == max(1, usable_cores() // 2) == torch.get_num_threads()
    choice = configure_cpu_threads({"LOCAL_WORLD_SIZE": str(4 * usable_cores())}, None)
    assert choice.threads == 1


@pytest.mark.parametrize(
    "parent, reason",
    [
        (FakeProcess([*LAUNCHER[:3], "--num_cpu_threads_per_process", "1", *LAUNCHER[3:]], {}), "--num_cpu"),
        (FakeProcess(LAUNCHER, {"OMP_NUM_THREADS": "1"}), "OMP_NUM_THREADS"),
        (FakeProcess(["python", "train.py"], {}), "OMP_NUM_THREADS"),
    ],
)
def test_a_thread_count_chosen_by_the_user_is_kept(parent, reason):
    torch.set_num_threads(1)
    choice = configure_cpu_threads({"OMP_NUM_THREADS": "1"}, parent)
    assert choice.threads == 1 == torch.get_num_threads()
    assert choice.reason.startswith(reason)


@pytest.mark.slow
@pytest.mark.parametrize("chosen", [False, True])
def test_accelerate_launch_trains_on_every_core_unless_told_otherwise(tmp_path, chosen):
    """The real launcher: its OMP_NUM_THREADS=1 default is overridden, --num_cpu_threads_per_process 1 is kept;
    the first log line says which."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1"]
    launcher += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    if chosen:
        launcher += ["--num_cpu_threads_per_process", "1"]
    result = subprocess.run(
        [*launcher, str(ROOT / "training" / "train.py"), "--output_dir", str(tmp_path), "--max_train_steps", "1"]
        + ["--train_batch_size", "8", "--num_train_timesteps", "10", "--num_samples", "1", "--report_to", "none"]
        + ["--max_train_samples", "16", "--num_eval_images", "2", "--checkpointing_steps", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first_line = next(line for line in result.stderr.splitlines() if " INFO train: " in line)
    expected = "1 CPU thread(s) per process (--num_cpu_threads_per_process)" if chosen else "every core"
    assert expected in first_line, first_line
    if not chosen:
        assert f"{usable_cores()} CPU thread(s) per process" in first_line


def test_launcher_is_recognised_however_it_is_started():
    for command in (
        ["/venv/bin/accelerate", "launch", "train.py"],
        ["python", "-m", "accelerate.commands.launch", "train.py"],
        ["/venv/bin/accelerate-launch", "train.py"],
    ):
        assert launcher_thread_request(FakeProcess(command, {})) == "default", command
