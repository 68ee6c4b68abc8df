"""`simple-ddpm fid` and the sampler options of `simple-ddpm sample`, on a tiny pipeline and a tiny feature
classifier made here, checked against the same computation done directly."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_pipeline import save_trained_folder, tiny_pipeline

from simple_ddpm import SimpleDDPMPipeline
from simple_ddpm.cli import main
from simple_ddpm.feature_networks import FeatureClassifier, load_feature_extractor, save_feature_classifier
from simple_ddpm.frechet import FeatureStatistics, frechet_distance
from simple_ddpm.image_processing import to_pixels
from simple_ddpm.sampling import evenly_spaced_steps, generate_images


@pytest.fixture
def pipe_folder(tmp_path):
    save_trained_folder(tiny_pipeline(), tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def image_folder(tmp_path):
    """Twelve random 8x8 RGB images, as PNG files."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture
def classifier(tmp_path):
    torch.manual_seed(0)
    model = FeatureClassifier(in_channels=3, image_size=8, num_classes=3, widths=[4, 8], feature_dim=5)
    save_feature_classifier(model, tmp_path / "classifier.safetensors")
    return tmp_path / "classifier.safetensors"


def printed_distance(capsys) -> float:
    out = capsys.readouterr().out
    return float(re.search(r"Frechet distance: ([0-9.]+)", out).group(1))


def fid_command(pipe_folder, reference, classifier, tmp_path, *extra):
    return ["fid", str(pipe_folder), str(reference), "--features", str(classifier), "--num-images", "10"] + [
        "--batch-size",
        "4",
        "--seed",
        "2",
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]


@pytest.mark.parametrize("scheduler,steps", [("ddpm", "10"), ("ddim", "4"), ("dpm++", "3")])
def test_fid_of_samples_equals_the_distance_computed_directly(
    pipe_folder, image_folder, classifier, tmp_path, capsys, scheduler, steps
):
    command = fid_command(pipe_folder, image_folder, classifier, tmp_path, "--scheduler", scheduler)
    assert main(command + ["--num-inference-steps", steps]) == 0
    printed = printed_distance(capsys)

    pipe = SimpleDDPMPipeline.from_pretrained(pipe_folder)
    pipe.set_progress_bar_config(disable=True)
    if scheduler == "dpm++":
        from diffusers import DPMSolverMultistepScheduler

        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    eta = {"ddpm": 1.0, "ddim": 0.0, "dpm++": None}[scheduler]
    samples = generate_images(pipe, 10, batch_size=10, seed=2, num_inference_steps=int(steps), eta=eta, progress=False)
    extractor = load_feature_extractor(str(classifier))
    generated = FeatureStatistics.of(extractor((samples * 255).round().to(torch.uint8)), extractor.name)
    reference_pixels = np.stack([to_pixels(Image.open(p), 3, 8) for p in sorted(image_folder.iterdir())])
    reference = FeatureStatistics.of(extractor(torch.from_numpy(reference_pixels)), extractor.name)
    assert printed == pytest.approx(frechet_distance(generated, reference), abs=1e-4)


def test_reference_statistics_are_cached_and_the_cache_file_is_a_valid_reference(
    pipe_folder, image_folder, classifier, tmp_path, capsys
):
    command = fid_command(pipe_folder, image_folder, classifier, tmp_path, "--num-inference-steps", "3")
    assert main(command) == 0
    first = capsys.readouterr().out
    (cache,) = (tmp_path / "cache").glob("*.npz")
    assert f"cached at {cache}" in first
    assert main(command) == 0
    second = capsys.readouterr().out
    assert "from the cache" in second
    distance = re.search(r"Frechet distance: ([0-9.]+)", first).group(1)
    assert re.search(r"Frechet distance: ([0-9.]+)", second).group(1) == distance
    assert main(fid_command(pipe_folder, cache, classifier, tmp_path, "--num-inference-steps", "3")) == 0
    assert f"Frechet distance: {distance}" in capsys.readouterr().out
    # another feature network is another cache entry
    torch.manual_seed(1)
    other = FeatureClassifier(in_channels=3, image_size=8, num_classes=3, widths=[4, 8], feature_dim=5)
    save_feature_classifier(other, tmp_path / "other.safetensors")
    assert main(fid_command(pipe_folder, image_folder, tmp_path / "other.safetensors", tmp_path)) == 0
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_fid_of_an_image_folder_against_itself_is_zero(image_folder, classifier, tmp_path, capsys):
    assert main(fid_command(image_folder, image_folder, classifier, tmp_path)) == 0
    assert printed_distance(capsys) == pytest.approx(0, abs=1e-4)


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    last_line = err.rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert last_line.startswith(f"simple-ddpm {command}: error: ") and "Traceback" not in err, err
    return last_line


def test_fid_bad_input_ends_in_one_line(pipe_folder, image_folder, classifier, tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    small = FeatureClassifier(in_channels=1, image_size=4, num_classes=2, widths=[4], feature_dim=3)
    save_feature_classifier(small, tmp_path / "small.safetensors")
    cases = [
        (fid_command(pipe_folder, image_folder, tmp_path / "small.safetensors", tmp_path), "takes 1-channel 4x4"),
        (fid_command(pipe_folder, image_folder, tmp_path / "nope.safetensors", tmp_path), "no such file"),
        (fid_command(pipe_folder, tmp_path / "missing.npz", classifier, tmp_path), "no such statistics file"),
        (fid_command(pipe_folder, image_folder, classifier, tmp_path, "--num-inference-steps", "11"), r"\[1, 10\]"),
        (fid_command(pipe_folder, image_folder, classifier, tmp_path, "--scheduler", "dpm++", "--eta", "0"), "eta"),
        (fid_command(tmp_path / "cache", image_folder, classifier, tmp_path), "nor an image folder"),
    ]
    (tmp_path / "cache").mkdir()
    for command, message in cases:
        assert main(command) == 2, command
        assert re.search(message, one_line_error(capsys, "fid")), command
    # statistics of another feature network
    FeatureStatistics.of(np.random.default_rng(0).normal(size=(5, 5)), "inception-v3-compat-2048").save(
        tmp_path / "inception.npz"
    )
    assert main(fid_command(pipe_folder, tmp_path / "inception.npz", classifier, tmp_path)) == 2
    assert "different feature networks" in one_line_error(capsys, "fid")
    # Inception-v3 without torch-fidelity (here torchvision is missing; forced, in case it is installed)
    monkeypatch.setitem(__import__("sys").modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    assert main(["fid", str(pipe_folder), str(image_folder), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "need torch-fidelity" in one_line_error(capsys, "fid")


# --- simple-ddpm sample: samplers and the trajectory -------------------------------------------------------------


def test_sample_with_ddim_scheduler_is_the_pipeline_at_eta_zero(pipe_folder, tmp_path):
    assert main(["sample", str(pipe_folder), "--output", str(tmp_path / "out"), "--num-images", "2"] + [
        "--num-inference-steps", "5", "--scheduler", "ddim", "--seed", "4"
    ]) == 0  # fmt: skip
    pipe = SimpleDDPMPipeline.from_pretrained(pipe_folder)
    expected = pipe(
        batch_size=2,
        generator=[torch.Generator().manual_seed(4 + i) for i in range(2)],
        num_inference_steps=5,
        eta=0.0,
        output_type="np",
    ).images
    written = np.stack([np.asarray(Image.open(tmp_path / "out" / f"{i}.png")) for i in range(2)])
    np.testing.assert_array_equal(written, (expected * 255).round().astype(np.uint8))


def test_sample_trajectory_shows_x_t_over_x0_hat_and_ends_on_the_sample(pipe_folder, tmp_path):
    status = main(
        [
            "sample",
            str(pipe_folder),
            "--output",
            str(tmp_path / "grid.png"),
            "--num-images",
            "3",
            "--num-inference-steps",
            "6",
        ]
        + ["--trajectory", str(tmp_path / "trajectory.png"), "--trajectory-steps", "3"]
    )
    assert status == 0
    trajectory = np.asarray(Image.open(tmp_path / "trajectory.png"))
    cell = 33  # 8 x 8 samples shown at 32 x 32, 1-pixel gaps
    assert trajectory.shape == (2 * 3 * cell + 1, 3 * cell + 1, 3)  # (x_t, x0_hat) rows of 3 samples x 3 steps
    samples = np.asarray(Image.open(tmp_path / "grid.png"))
    for i in range(3):
        last_x_t = trajectory[1 + 2 * i * cell : 2 * i * cell + 33, 1 + 2 * cell : 3 * cell]
        last_x0_hat = trajectory[1 + (2 * i + 1) * cell : (2 * i + 1) * cell + 33, 1 + 2 * cell : 3 * cell]
        np.testing.assert_array_equal(last_x_t, last_x0_hat)  # the last step returns x0_hat
        np.testing.assert_array_equal(last_x_t, samples[1:cell, 1 + i * cell : (i + 1) * cell])


def test_ddim_of_a_fixed_large_model_is_refused_in_one_line(tmp_path, capsys):
    save_trained_folder(tiny_pipeline(variance_type="fixed_large"), tmp_path / "large")
    command = ["sample", str(tmp_path / "large"), "--output", str(tmp_path / "g.png"), "--num-inference-steps", "3"]
    assert main(command + ["--scheduler", "ddim"]) == 2
    assert "eta=0.0 needs variance_type 'fixed_small' or 'analytic'" in one_line_error(capsys, "sample")


def test_trajectory_with_a_sampler_that_gives_no_x0_hat_is_refused(pipe_folder, tmp_path, capsys):
    command = ["sample", str(pipe_folder), "--output", str(tmp_path / "g.png"), "--num-inference-steps", "3"]
    assert main(command + ["--scheduler", "dpm++", "--trajectory", str(tmp_path / "t.png")]) == 2
    assert "gives no x0_hat" in one_line_error(capsys, "sample")


def test_evenly_spaced_steps_start_and_end_at_the_chain_ends():
    assert evenly_spaced_steps(1000, 5) == [0, 250, 500, 749, 999]
    assert evenly_spaced_steps(3, 8) == [0, 1, 2]
    assert evenly_spaced_steps(10, 1) == [9]
