"""Two processes (`accelerate launch`, gloo on CPU): killed, then signalled on one process only, and resumed, the
run ends bitwise where an uninterrupted one ends; a soak of a few hundred steps keeps exactly its last 2
checkpoints, each complete."""

import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from reliability_runs import TWO_PROCESSES, Run, assert_same_training_state, load_any, partial_saves, run

from simple_ddpm import SimpleDDPMPipeline
from training.checkpoints import list_checkpoints

pytestmark = pytest.mark.slow

CHECKPOINT_FILES = {
    "model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "random_states_1.pkl",
    "training_progress.json", "ema.safetensors", "ema.json", "unet_config.json",
}  # fmt: skip


def test_two_processes_killed_then_signalled_on_one_process_resume_to_the_uninterrupted_result(tmp_path):
    uninterrupted = Run(tmp_path / "uninterrupted", launcher=TWO_PROCESSES)  # beside the interrupted runs

    output_dir = tmp_path / "run"
    killed = Run(output_dir, launcher=TWO_PROCESSES)
    killed.wait_for(output_dir / "checkpoint-2")
    time.sleep(random.uniform(0, 0.2))
    killed.kill_all(signal.SIGKILL)  # the machine goes down: launcher and both workers at once
    killed.wait()

    latest = int(list_checkpoints(output_dir)[-1].name.split("-")[1])
    assert latest + 2 < 8, f"the killed run got to checkpoint-{latest}"
    signalled = Run(output_dir, "--resume_from_checkpoint", "latest", launcher=TWO_PROCESSES)
    signalled.wait_for(output_dir / f"checkpoint-{latest + 2}")
    os.kill(signalled.workers()[-1], signal.SIGTERM)  # only one process hears it; both must stop after the same step
    assert signalled.wait() != 0
    stopped = re.search(r"Stopped by SIGTERM after step (\d+); checkpoint saved to (\S+)\.", signalled.output())
    step = int(stopped[1])
    assert Path(stopped[2]) == list_checkpoints(output_dir)[-1] == output_dir / f"checkpoint-{step}"
    assert CHECKPOINT_FILES <= {p.name for p in (output_dir / f"checkpoint-{step}").iterdir()}
    assert load_any(output_dir / f"checkpoint-{step}" / "training_progress.json")["global_step"] == step

    run(output_dir, "--resume_from_checkpoint", "latest", launcher=TWO_PROCESSES)
    assert partial_saves(output_dir) == []
    assert_same_training_state(uninterrupted.finish().output_dir, output_dir)


def test_soak_of_two_processes_keeps_exactly_the_last_two_complete_checkpoints_and_a_loadable_pipeline(tmp_path):
    output_dir = tmp_path / "soak"
    steps = 200
    run(
        output_dir, "--max_train_steps", str(steps), "--train_batch_size", "2", "--checkpointing_steps", "4",
        "--checkpoints_total_limit", "2", "--sample_every", "0", launcher=TWO_PROCESSES,
    )  # fmt: skip
    checkpoints = list_checkpoints(output_dir)
    assert [p.name for p in checkpoints] == ["checkpoint-196", "checkpoint-200"]
    for folder in checkpoints:
        assert {p.name for p in folder.iterdir()} == CHECKPOINT_FILES
        for file in folder.iterdir():
            load_any(file)  # complete: every file parses
        assert load_any(folder / "training_progress.json")["global_step"] == int(folder.name.split("-")[1])
    assert partial_saves(output_dir) == []
    pipe = SimpleDDPMPipeline.from_pretrained(output_dir)
    images = pipe(batch_size=2, num_inference_steps=5, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(images.images).all()
