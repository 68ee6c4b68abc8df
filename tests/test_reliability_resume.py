"""One process: a run killed (SIGKILL), crashed while writing a checkpoint, or stopped by Ctrl-C or SIGTERM, then
resumed with --resume_from_checkpoint latest, ends bitwise where an uninterrupted run of the same length ends."""

import random
import re
import signal
import time
from pathlib import Path

import pytest
from reliability_runs import FAULTY_TRAIN, Run, assert_same_training_state, partial_saves, run

from training.checkpoints import list_checkpoints, resolve_resume

pytestmark = pytest.mark.slow

STOPPED = re.compile(
    r"Stopped by (SIG\w+) after step (\d+); checkpoint saved to (.+)\. Continue with --resume_from_checkpoint latest\."
)


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory) -> Run:
    """Started once, in the background, beside the first test's own runs (two cores, one thread each)."""
    return Run(tmp_path_factory.mktemp("uninterrupted") / "run")


@pytest.fixture
def uninterrupted(uninterrupted_run) -> Path:
    """The uninterrupted run's output folder, once it has finished."""
    return uninterrupted_run.finish().output_dir


def resume(output_dir: Path) -> Run:
    resumed = run(output_dir, "--resume_from_checkpoint", "latest")
    assert "Resumed from" in resumed.output()
    assert partial_saves(output_dir) == []  # what a killed save left is gone
    return resumed


def test_run_killed_at_a_random_step_resumes_to_the_uninterrupted_result(uninterrupted_run, tmp_path):
    output_dir = tmp_path / "run"
    checkpoint, delay = random.choice((2, 4)), random.uniform(0, 0.5)
    killed = Run(output_dir)
    killed.wait_for(output_dir / f"checkpoint-{checkpoint}")
    time.sleep(delay)  # anywhere in the next steps, a checkpoint save included
    assert killed.process.poll() is None, "the run ended before it could be killed"
    killed.kill_all(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    resume(output_dir)
    print(f"killed {delay:.2f} s after checkpoint-{checkpoint}")  # shown if the comparison fails
    assert_same_training_state(uninterrupted_run.finish().output_dir, output_dir)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one_and_resumes_from_it(uninterrupted, tmp_path):
    output_dir = tmp_path / "run"
    crash = {"CRASH_WHILE_WRITING": "checkpoint-4/optimizer.bin", "CRASH_WITH": "exit"}
    run(output_dir, script=FAULTY_TRAIN, env=crash, expect=137)
    # The process died with half of checkpoint-4's optimizer state written: under the partial name only.
    half_written = output_dir / ".partial-checkpoint-4" / "optimizer.bin"
    assert 0 < half_written.stat().st_size < (uninterrupted / "checkpoint-4" / "optimizer.bin").stat().st_size
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-2"]
    assert resolve_resume("latest", output_dir) == output_dir / "checkpoint-2"
    resume(output_dir)
    assert_same_training_state(uninterrupted, output_dir)


def test_ctrl_c_then_sigterm_each_checkpoint_the_current_step_and_the_resumed_run_ends_as_uninterrupted(
    uninterrupted, tmp_path
):
    output_dir = tmp_path / "run"
    first = Run(output_dir)
    first.wait_for(output_dir / "checkpoint-2")
    first.kill_all(signal.SIGINT)  # Ctrl-C: the terminal signals the whole process group
    assert first.wait() == 128 + signal.SIGINT
    name, step, folder = STOPPED.fullmatch(first.last_line()).groups()
    assert (name, Path(folder)) == ("SIGINT", output_dir / f"checkpoint-{step}")
    assert list_checkpoints(output_dir)[-1] == Path(folder)

    second = Run(output_dir, "--resume_from_checkpoint", "latest")  # pre-empted in turn by the scheduler
    next_checkpoint = int(step) + 2 - int(step) % 2
    assert next_checkpoint < 8, f"the first run was stopped only after step {step}"
    second.wait_for(output_dir / f"checkpoint-{next_checkpoint}")
    second.kill_all(signal.SIGTERM)
    assert second.wait() == 128 + signal.SIGTERM
    name, step, folder = STOPPED.fullmatch(second.last_line()).groups()
    assert name == "SIGTERM" and list_checkpoints(output_dir)[-1] == Path(folder) == output_dir / f"checkpoint-{step}"

    resume(output_dir)
    assert_same_training_state(uninterrupted, output_dir)


def test_resuming_a_checkpoint_of_another_model_size_is_one_line_before_any_work(uninterrupted, tmp_path):
    checkpoint = uninterrupted / "checkpoint-2"
    refused = run(tmp_path / "run", "--model_preset", "small", "--resume_from_checkpoint", str(checkpoint), expect=2)
    assert refused.last_line().startswith(
        f"error: Checkpoint {checkpoint} is from a different model (block_out_channels: checkpoint [32, 64] vs now "
        "[64, 128, 128]"
    )
    assert "steps:" not in refused.output() and not (tmp_path / "run" / "checkpoint-2").exists()
