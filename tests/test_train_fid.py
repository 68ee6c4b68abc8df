"""--fid_every in training/train.py: the logged and saved Frechet distance, recomputed here; bad feature networks
end the run before training; the model card shows the distance."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from tiny_pipeline import save_trained_folder, tiny_pipeline, training_metrics

from simple_ddpm import SimpleDDPMPipeline, write_model_card
from simple_ddpm.feature_networks import FeatureClassifier, load_feature_extractor, save_feature_classifier
from simple_ddpm.frechet import frechet_distance
from simple_ddpm.sample_quality import pixel_statistics, sample_statistics
from training.image_data import digits_dataset

ROOT = Path(__file__).resolve().parents[1]

SMALL_RUN = [
    "--report_to", "none", "--max_train_samples", "96", "--train_batch_size", "16", "--num_train_timesteps", "50",
    "--lr_warmup_steps", "2", "--num_samples", "4", "--num_inference_steps", "10", "--num_eval_images", "8",
    "--eval_timesteps", "5", "--sample_every", "0", "--eval_every", "0", "--checkpointing_steps", "0",
]  # fmt: skip


def run_train(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "training" / "train.py"), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def classifier_file(path: Path, in_channels: int = 1, image_size: int = 8) -> Path:
    torch.manual_seed(0)
    model = FeatureClassifier(in_channels=in_channels, image_size=image_size, num_classes=10, widths=[4, 8])
    save_feature_classifier(model, path)
    return path


@pytest.mark.slow
def test_training_logs_and_saves_the_frechet_distance_of_the_saved_pipeline(tmp_path):
    output_dir = tmp_path / "run"
    features = classifier_file(tmp_path / "classifier.safetensors")
    result = run_train(
        *SMALL_RUN, "--output_dir", str(output_dir), "--max_train_steps", "4", "--final_eval_timesteps", "3",
        "--report_to", "tensorboard", "--fid_every", "2", "--fid_num_samples", "6", "--fid_features", str(features),
        "--periodic_inference_steps", "10",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2: Frechet distance" in result.stderr + result.stdout

    # recomputed from the saved pipeline and the 8 held-out digits (scikit-learn's, not train.py's)
    pipe = SimpleDDPMPipeline.from_pretrained(output_dir)
    pipe.set_progress_bar_config(disable=True)
    extractor = load_feature_extractor(str(features))
    held_out = digits_dataset().train_test_split(test_size=0.1, seed=0)["test"]
    pixels = torch.from_numpy(np.stack([np.asarray(image) for image in held_out[:8]["image"]]))[:, None]
    reference = pixel_statistics(extractor, pixels, batch_size=8, progress=False)
    samples = sample_statistics(pipe, extractor, 6, batch_size=256, seed=0, num_inference_steps=10, progress=False)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["frechet_distance"]["value"] == pytest.approx(frechet_distance(samples, reference), rel=1e-5)
    assert metrics["frechet_distance"] | {"value": 0} == {
        "value": 0,
        "features": extractor.name,
        "num_samples": 6,
        "num_inference_steps": 10,
        "reference_images": 8,
    }

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((output_dir / "logs" / "simple-ddpm").glob("events.out.tfevents.*"))))
    events.Reload()
    logged = events.Scalars("eval/frechet_distance")
    assert [e.step for e in logged] == [2, 4]
    assert logged[-1].value == pytest.approx(metrics["frechet_distance"]["value"], rel=1e-6)
    card = ModelCard.load(output_dir / "README.md")
    assert f"**{metrics['frechet_distance']['value']:.4f}**" in card.text


@pytest.mark.parametrize(
    "features,message",
    [
        ("{tmp}/missing.safetensors", "error: --fid_features: --features {tmp}/missing.safetensors: no such file"),
        ("{tmp}/rgb.safetensors", "error: --fid_features: The feature classifier takes 3-channel 8x8 images"),
        ("inception", "error: --fid_features: "),  # no torch-fidelity here, or no network for its weights
    ],
)
def test_a_feature_network_that_cannot_serve_ends_the_run_before_training(tmp_path, features, message):
    classifier_file(tmp_path / "rgb.safetensors", in_channels=3)
    result = run_train(
        *SMALL_RUN, "--output_dir", str(tmp_path / "out"), "--fid_every", "1",
        "--fid_features", features.format(tmp=tmp_path), "--max_train_steps", "2",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(message.format(tmp=tmp_path))
    assert "Traceback" not in result.stderr and not (tmp_path / "out" / "model_index.json").exists()


def test_one_fid_sample_is_refused_at_parse_time(tmp_path):
    result = run_train("--output_dir", str(tmp_path / "out"), "--fid_every", "5", "--fid_num_samples", "1")
    assert result.returncode == 2 and "--fid_num_samples must be at least 2, got 1." in result.stderr


def test_card_shows_the_frechet_distance_beside_the_bound(tmp_path):
    pipe = tiny_pipeline()
    save_trained_folder(pipe, tmp_path)
    metrics = training_metrics(pipe) | {
        "frechet_distance": {
            "value": 12.3456,
            "features": "classifier-sha256:0123",
            "num_samples": 500,
            "num_inference_steps": 25,
            "reference_images": 256,
        }
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    card = ModelCard.load(write_model_card(tmp_path, repo_id="alice/ddpm"))
    assert "## Sample quality" in card.text and "| Frechet distance | **12.3456** |" in card.text
    assert "| samples | 500, DDPM with 25 reverse steps |" in card.text
    assert [r.metric_type for r in card.data.eval_results] == ["bits_per_dim", "frechet_distance"]
    assert card.data.eval_results[1].metric_value == 12.3456
