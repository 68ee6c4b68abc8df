"""training/train.py's analytic variance table: its default size, and the table a run leaves in its folder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_pipeline import tiny_pipeline

from simple_ddpm import SimpleDDPMPipeline
from simple_ddpm.image_processing import pixels_to_model_input
from simple_ddpm.model_card import ANALYTIC_ADVICE
from training.arguments import parse_args
from training.image_data import PreparedImages
from training.train import analytic_image_count, fill_analytic_table

ROOT = Path(__file__).resolve().parents[1]


def options(tmp_path: Path, *extra: str):
    return parse_args(["--output_dir", str(tmp_path / "out"), *extra])


def test_default_table_costs_at_most_a_tenth_of_the_runs_unet_work(tmp_path):
    args = options(tmp_path)  # T = 1000
    for images_seen in (19_200, 600_000, 10_000_000):
        count = analytic_image_count(args, images_seen, streaming=False)
        assert count * 1000 <= 0.1 * 3 * images_seen  # a training image costs ~3 UNet passes
        assert count == min(100, images_seen * 3 // 10_000)
    assert analytic_image_count(options(tmp_path, "--analytic_images", "0"), 10**7, streaming=False) == 0
    assert analytic_image_count(options(tmp_path, "--analytic_images", "7"), 100, streaming=False) == 7
    learned = options(tmp_path, "--variance_type", "learned_range")
    assert analytic_image_count(learned, 10**7, streaming=False) == 0


def test_the_table_is_the_pipelines_estimate_and_the_trained_variance_stays(tmp_path):
    pixels = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = PreparedImages(train=pixels, stream=None, eval=pixels[:2], channels=3, resolution=8, dataset_id="x")
    pipe = tiny_pipeline()
    info = fill_analytic_table(pipe, data, options(tmp_path, "--seed", "5"), count=4)
    assert info["images"] == 4 and info["network_calls"] == 40
    assert pipe.scheduler.config.variance_type == "fixed_small"
    expected = tiny_pipeline().estimate_analytic_variance(
        pixels_to_model_input(pixels[:4]), generator=torch.Generator().manual_seed(5)
    )
    assert pipe.scheduler.config.analytic_mean_squared_eps == expected.tolist()


@pytest.mark.slow
def test_a_training_run_leaves_the_table_in_its_folder_and_card(tmp_path):
    output_dir = tmp_path / "run"
    small_run = [
        "--report_to", "none", "--max_train_samples", "32", "--train_batch_size", "16", "--num_train_timesteps", "20",
        "--num_samples", "2", "--num_inference_steps", "4", "--num_eval_images", "4", "--final_eval_timesteps", "3",
        "--max_train_steps", "2", "--analytic_images", "3", "--output_dir", str(output_dir),
    ]  # fmt: skip
    result = subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), *small_run], capture_output=True)
    assert result.returncode == 0, result.stderr[-3000:]
    scheduler = SimpleDDPMPipeline.from_pretrained(output_dir).scheduler
    assert len(scheduler.config.analytic_mean_squared_eps) == 20 and scheduler.config.variance_type == "fixed_small"
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["analytic_variance"]["images"] == 3 and metrics["analytic_variance"]["network_calls"] == 60
    card = (output_dir / "README.md").read_text()
    assert "M = 3 training images (60 network calls)" in card and ANALYTIC_ADVICE in card  # the benchmark's advice
