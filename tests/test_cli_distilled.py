"""`simple-ddpm` on a distilled student's folder: `sample` and `fid` take its own step count, `elbo` refuses."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_pipeline import tiny_unet

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.cli import main
from simple_ddpm.feature_networks import FeatureClassifier, save_feature_classifier

CHAIN = [9, 4]  # T = 10, a 2-step student


@pytest.fixture
def student_folder(tmp_path):
    scheduler = SimpleDDPMScheduler(
        num_train_timesteps=10, beta_end=0.2, prediction_type="v_prediction", clip_sample=False,
        distilled_timesteps=CHAIN,
    )  # fmt: skip
    SimpleDDPMPipeline(unet=tiny_unet(), scheduler=scheduler).save_pretrained(tmp_path / "student")
    return tmp_path / "student"


def test_sample_uses_the_students_own_steps_deterministically(student_folder, tmp_path, capsys):
    assert main(["sample", str(student_folder), "--output", str(tmp_path / "out"), "--num-images", "2"]) == 0
    written = np.stack([np.asarray(Image.open(tmp_path / "out" / f"{i}.png")) for i in range(2)])
    pipe = SimpleDDPMPipeline.from_pretrained(student_folder)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    expected = [
        pipe(
            generator=torch.Generator().manual_seed(i),
            output_type="np",
            callback_on_step_end=lambda p, step, t, tensors: calls.append(int(t)) or {},
        ).images[0]
        for i in range(2)
    ]
    assert calls == CHAIN * 2
    np.testing.assert_array_equal(written, np.round(np.stack(expected) * 255).astype(np.uint8))
    assert main(["sample", str(student_folder), "--output", str(tmp_path / "x.png"), "--num-inference-steps", "5"])
    assert "This is a 2-step distilled model" in capsys.readouterr().err


def test_sample_refuses_a_solver_or_a_spacing_on_a_student_in_one_line(student_folder, tmp_path, capsys):
    assert main(["sample", str(student_folder), "--output", str(tmp_path / "x.png"), "--scheduler", "dpm++"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars: one line
    assert error.startswith("simple-ddpm ") and "2-step distilled model: it samples its own timesteps" in error


def test_elbo_refuses_a_student_in_one_line(student_folder, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(images / "0.png")
    assert main(["elbo", str(student_folder), str(images)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("simple-ddpm ") and "2-step distilled sampler, not a likelihood model" in error


def test_fid_samples_the_students_steps(student_folder, tmp_path, capsys):
    torch.manual_seed(0)
    classifier = FeatureClassifier(in_channels=3, image_size=8, num_classes=3, widths=[4, 8], feature_dim=5)
    save_feature_classifier(classifier, tmp_path / "classifier.safetensors")
    images = tmp_path / "images"
    images.mkdir()
    for i, pixels in enumerate(np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)):
        Image.fromarray(pixels).save(images / f"{i}.png")
    command = ["fid", str(student_folder), str(images), "--features", str(tmp_path / "classifier.safetensors")]
    assert main(command + ["--num-images", "4", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "the distilled model's DDIM at 2 steps" in capsys.readouterr().out
