"""`simple-ddpm analytic`, `elbo --num-inference-steps` and `--timestep-spacing optimal` on the tiny pipeline:
outputs checked against direct pipeline calls."""

import json
import re

import numpy as np
import pytest
import test_cli
import torch
from PIL import Image
from tiny_pipeline import tiny_pipeline

from simple_ddpm import SimpleDDPMPipeline
from simple_ddpm.cli import main
from simple_ddpm.image_processing import pixels_to_model_input

pipe_folder, image_folder = test_cli.pipe_folder, test_cli.image_folder  # the same fixtures


def pixels_of_folder(folder) -> np.ndarray:
    """The (N, H, W, 3) uint8 pixels of test_cli's image folder, in file order."""
    return np.stack([np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))])


def test_analytic_stores_the_pipelines_own_estimate_in_the_folder_and_the_card(pipe_folder, image_folder, capsys):
    folder, pixels = image_folder, pixels_of_folder(image_folder)
    assert (
        main(["analytic", str(pipe_folder), str(folder), "--num-images", "4", "--seed", "3", "--device", "cpu"]) == 0
    )
    out = capsys.readouterr().out
    assert "4 x 10 = 40 network calls" in out and "sample with `--variance-type analytic`" in out

    expected = SimpleDDPMPipeline.from_pretrained(pipe_folder.parent / "model")  # reloaded: the table is saved
    scheduler = expected.scheduler
    assert scheduler.config.variance_type == "fixed_small"  # kept, as train.py keeps it
    direct = tiny_pipeline()
    direct.scheduler = type(scheduler).from_config(scheduler.config, variance_type="fixed_small")
    images = pixels_to_model_input(torch.from_numpy(pixels[:4]).permute(0, 3, 1, 2))
    table = direct.estimate_analytic_variance(images, generator=torch.Generator().manual_seed(3))
    assert scheduler.config.analytic_mean_squared_eps == table.tolist()
    assert not list(pipe_folder.rglob(".partial-*"))
    metrics = json.loads((pipe_folder / "metrics.json").read_text())
    assert metrics["analytic_variance"]["images"] == 4 and metrics["analytic_variance"]["network_calls"] == 40
    assert "M = 4 training images" in (pipe_folder / "README.md").read_text()


def test_elbo_of_the_k_step_chain_is_the_pipelines(pipe_folder, image_folder, capsys):
    folder, pixels = image_folder, pixels_of_folder(image_folder)
    command = ["elbo", str(pipe_folder), str(folder), "--num-images", "2", "--num-inference-steps", "4"]
    assert main([*command, "--variance-type", "fixed_large", "--device", "cpu"]) == 0
    printed = float(re.search(r"bits/dim: ([0-9.]+)", capsys.readouterr().out).group(1))
    pipe = tiny_pipeline(variance_type="fixed_large")
    images = pixels_to_model_input(torch.from_numpy(pixels[:2]).permute(0, 3, 1, 2))
    bits = [
        pipe.elbo(images[i : i + 1], generator=torch.Generator().manual_seed(i), num_inference_steps=4).bits_per_dim
        for i in range(2)
    ]
    assert printed == pytest.approx(torch.cat(bits).mean().item(), abs=1e-4)


def test_sample_with_optimal_timesteps_is_the_pipelines(pipe_folder, image_folder, tmp_path):
    folder = image_folder
    assert main(["analytic", str(pipe_folder), str(folder), "--num-images", "2", "--device", "cpu"]) == 0
    output = tmp_path / "out"
    command = ["sample", str(pipe_folder), "--output", str(output), "--num-images", "1", "--steps", "4"]
    assert main([*command, "--timestep-spacing", "optimal", "--device", "cpu"]) == 0
    pipe = SimpleDDPMPipeline.from_pretrained(pipe_folder)
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, timestep_spacing="optimal")
    image = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np").images[0]
    saved = np.asarray(Image.open(output / "0.png"), dtype=np.float64) / 255
    assert np.abs(saved - image).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["sample", "{model}", "--timestep-spacing", "optimal"], "needs the model's analytic variance table"),
        (["sample", "{model}", "--scheduler", "dpm++", "--timestep-spacing", "optimal"], "not to dpm\\+\\+"),
        (["elbo", "{model}", "{data}", "--variance-type", "analytic"], "needs analytic_mean_squared_eps"),
        (["elbo", "{model}", "{data}", "--timesteps", "2", "--num-inference-steps", "2"], "not both"),
        (["analytic", "user/repo", "{data}"], "must be a local folder"),
        (["analytic", "{learned}", "{data}"], "learns its own reverse variance"),
    ],
)
def test_bad_analytic_input_ends_with_one_line(pipe_folder, image_folder, tmp_path, capsys, arguments, message):
    learned = tmp_path / "learned"
    tiny_pipeline(variance_type="learned_range").save_pretrained(learned)
    values = {"model": str(pipe_folder), "data": str(image_folder), "learned": str(learned)}
    argv = [a.format(**values) for a in arguments] + ["--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.rstrip("\n").split("\n")[-1]
    assert err.startswith(f"simple-ddpm {arguments[0]}: error: ") and re.search(message, err), err
