"""The end of a training run (training/final_stages.py): each final stage is announced with its cost in UNet calls
and timed, and the final grid's and bound's default sizes are bounded by the run's own UNet work."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_pipeline import tiny_pipeline

from training import train
from training.arguments import parse_args
from training.final_stages import final_grid_steps, final_stage

ROOT = Path(__file__).resolve().parents[1]


def options(tmp_path: Path, *extra: str):
    return parse_args(["--output_dir", str(tmp_path / "out"), *extra])  # T = 1000, 64 samples, grids of 100 steps


def test_final_grid_takes_all_steps_only_where_they_are_a_small_share_of_the_runs_work(tmp_path):
    args, share = options(tmp_path), train.EXACT_BOUND_MAX_SHARE
    # the quickstart, 2,000 steps of 128 images: 64 x 1000 calls <= a quarter of 3 x 256,000
    assert 64 * 1000 <= share * 3 * 256_000 and final_grid_steps(args, 256_000, share) == 1000
    # the Fashion-MNIST benchmark, 19,200 images: the grids' 100 steps, 64 x 100 calls within a quarter of the work
    assert 64 * 100 <= share * 3 * 19_200 and final_grid_steps(args, 19_200, share) == 100
    # a 20-step smoke run of 128 images: as many steps as a quarter of 3 x 2,560 calls buy, 1,920 / 64 = 30
    assert final_grid_steps(args, 20 * 128, share) == 30
    # never fewer than 10, and a chosen count is kept
    assert final_grid_steps(args, 8, share) == 10
    assert final_grid_steps(options(tmp_path, "--num_inference_steps", "7"), 10**9, share) == 7


def test_final_bound_estimate_shrinks_in_a_short_run_and_not_in_a_real_one(tmp_path):
    args = options(tmp_path)
    assert train.final_eval_timesteps(args, num_eval_images=256, images_seen=200_000) == 100  # 25,600 <= 150,000
    # the benchmark's 19,200 images, 256 held out: a quarter of 3 x 19,200 calls is 14,400, 56 terms of 256 images
    assert train.final_eval_timesteps(args, num_eval_images=256, images_seen=19_200) == 14_400 // 256
    # 20 steps of 128 digits, 180 held out: a quarter of 3 x 2,560 calls is 1,920; 10 terms, the least taken
    assert train.final_eval_timesteps(args, num_eval_images=180, images_seen=2_560) == 10
    assert train.final_eval_timesteps(args, num_eval_images=180, images_seen=16) == 10


def test_a_final_stage_logs_its_cost_and_time_and_leaves_the_progress_bar_off(caplog):
    pipe = tiny_pipeline()
    with caplog.at_level(logging.INFO, logger="train"):
        with final_stage(pipe, "sample grid of 4 images, 5 steps", 20):
            assert pipe._progress_bar_config["disable"] is not sys.stderr.isatty()  # a bar on a terminal only
    assert pipe._progress_bar_config["disable"] is True
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "Final stage: sample grid of 4 images, 5 steps (20 UNet calls)"
    assert lines[1].startswith("Final stage done: sample grid of 4 images, 5 steps in ") and len(lines) == 2


@pytest.mark.slow
def test_a_run_logs_one_line_per_final_stage_before_it_starts(tmp_path):
    run = [
        "--report_to", "none", "--max_train_samples", "32", "--train_batch_size", "16", "--num_train_timesteps", "20",
        "--num_samples", "2", "--num_eval_images", "4", "--max_train_steps", "2", "--analytic_images", "3",
        "--output_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(ROOT / "training" / "train.py"), *run], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    started = [line.split("Final stage: ")[1] for line in result.stderr.splitlines() if "Final stage: " in line]
    assert started == [
        "analytic variance table from 3 training images (60 UNet calls)",
        # 2 steps of 16 images: 3 x 32 = 96 calls of training, a quarter of it 24. The grid's T = 20 steps (40
        # calls) do not fit: 24 / 2 = 12 steps; nor does the exact bound (80 calls): 10 terms, the least taken
        "sample grid of 2 images, 12 steps (24 UNet calls)",
        "held-out bound (10-term estimate) of 4 images (44 UNet calls)",
    ]
    assert sum("Final stage done: " in line for line in result.stderr.splitlines()) == 3
