"""Class-conditional training: labels found and carried with their pixels, label dropout, and bad label input."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from simple_ddpm import SimpleDDPMPipeline
from simple_ddpm.image_processing import pixels_to_model_input
from training.arguments import InvalidTrainingInput, parse_args
from training.checkpoints import check_compatible, write_unet_config
from training.image_data import prepare_images, training_batches
from training.train import drop_class_labels, grid_class_labels
from training.unet_presets import build_unet

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "training" / "train.py"


def options(tmp_path: Path, *extra: str):
    return parse_args(["--output_dir", str(tmp_path / "out"), *extra])


def labelled_dataset(folder: Path, labels: list[int], feature=None) -> Path:
    """A saved dataset of 8x8 images filled with the value 20 * label, so each image shows its label."""
    feature = feature or datasets.ClassLabel(names=["zero", "one", "two"])
    images = [np.full((8, 8), 20 * max(label, 0), dtype=np.uint8) for label in labels]
    features = datasets.Features({"image": datasets.Image(), "kind": feature, "caption": datasets.Value("string")})
    data = {"image": images, "kind": labels, "caption": ["x"] * len(labels)}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(folder))
    return folder


def test_auto_class_column_on_the_digits_keeps_each_image_with_its_scikit_learn_label(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    label_of = {
        np.round(image * (255 / 16)).astype(np.uint8).tobytes(): int(target)
        for image, target in zip(digits.images, digits.target, strict=True)
    }
    data = prepare_images(options(tmp_path, "--class_column", "auto", "--max_train_samples", "300"))
    assert data.class_names == [str(d) for d in range(10)] and data.class_column == "label"
    for pixels, labels in ((data.train, data.train_labels), (data.eval, data.eval_labels)):
        assert len(pixels) == len(labels)
        assert [label_of[image[0].numpy().tobytes()] for image in pixels] == labels.tolist()
    args = options(tmp_path, "--class_column", "auto", "--max_train_samples", "300", "--train_batch_size", "32")
    batches = training_batches(data, args, 0, 1, 0)
    for _ in range(12):  # past the first epoch of 9 batches
        pixels, labels = next(batches)
        assert [label_of[image[0].numpy().tobytes()] for image in pixels] == labels.tolist()


@pytest.mark.parametrize("streaming", [False, True])
def test_labels_travel_with_their_images_in_memory_and_streamed(tmp_path, streaming):
    folder = labelled_dataset(tmp_path / "data", [0, 1, 2] * 12)
    extra = ["--streaming", "--max_train_steps", "4"] if streaming else []
    args = options(
        tmp_path, "--dataset_name", str(folder), "--class_column", "kind", "--train_batch_size", "5",
        "--num_eval_images", "6", "--random_flip", *extra,
    )  # fmt: skip
    data = prepare_images(args)
    assert data.class_names == ["zero", "one", "two"]
    assert (data.eval[:, 0, 0, 0] == 20 * data.eval_labels).all()
    batches = training_batches(data, args, 0, 1, 0)
    for _ in range(8):  # more than one pass
        pixels, labels = next(batches)
        assert len(labels) == 5 and (pixels[:, 0, 0, 0] == 20 * labels).all()


def test_an_integer_column_has_classes_zero_to_its_largest_label(tmp_path):
    folder = labelled_dataset(tmp_path / "data", [0, 3, 1] * 4, feature=datasets.Value("int64"))
    data = prepare_images(options(tmp_path, "--dataset_name", str(folder), "--class_column", "kind"))
    assert data.class_names == ["0", "1", "2", "3"]
    assert (data.train[:, 0, 0, 0] == 20 * data.train_labels).all()


def test_label_dropout_replaces_labels_by_the_no_label_token_at_the_binomial_rate():
    torch.manual_seed(0)
    n, p, null = 100_000, 0.1, 10
    labels = torch.randint(0, 10, (n,))
    dropped = drop_class_labels(labels, p, null)
    is_null = dropped == null
    assert (dropped[~is_null] == labels[~is_null]).all()
    assert abs(is_null.sum().item() - n * p) < 4 * (n * p * (1 - p)) ** 0.5  # binomial(n, p)
    assert (drop_class_labels(labels, 0.0, null) == labels).all()
    torch.manual_seed(0)
    torch.randint(0, 10, (n,))
    assert torch.equal(drop_class_labels(labels, p, null), dropped)  # the global generator's stream alone


def test_grid_has_one_row_per_class():
    assert grid_class_labels(6, 3) == ([0, 0, 1, 1, 2, 2], 2)
    assert grid_class_labels(64, 10) == ([k for k in range(10) for _ in range(6)], 6)
    assert grid_class_labels(2, 3) == ([0, 1], 1)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--class_column", "caption"], "--class_column caption is not a label column: it holds string"),
        (["--class_column", "image"], "--class_column image is not a label column"),
        (["--class_column", "species"], "--class_column species: no such column; the columns are: image, kind"),
    ],
)
def test_a_column_that_is_not_a_label_is_refused(tmp_path, extra, message):
    folder = labelled_dataset(tmp_path / "data", [0, 1, 2] * 4)
    with pytest.raises(InvalidTrainingInput, match=message):
        prepare_images(options(tmp_path, "--dataset_name", str(folder), *extra))


def test_auto_needs_exactly_one_class_label_column(tmp_path):
    folder = labelled_dataset(tmp_path / "data", [0, 1, 2] * 4, feature=datasets.Value("int64"))
    with pytest.raises(
        InvalidTrainingInput, match="--class_column auto needs exactly one ClassLabel column, found none"
    ):
        prepare_images(options(tmp_path, "--dataset_name", str(folder), "--class_column", "auto"))


@pytest.mark.parametrize("feature", [None, datasets.Value("int64")])
def test_labels_out_of_range_are_refused(tmp_path, feature):
    folder = labelled_dataset(tmp_path / "data", [0, 1, -1] * 4, feature=feature)  # ClassLabel's -1: no label
    with pytest.raises(InvalidTrainingInput, match=r"label\(s\) out of range, e.g. -1"):
        prepare_images(options(tmp_path, "--dataset_name", str(folder), "--class_column", "kind"))


def test_streaming_an_integer_label_column_is_refused(tmp_path):
    folder = labelled_dataset(tmp_path / "data", [0, 1, 2] * 4, feature=datasets.Value("int64"))
    args = options(
        tmp_path, "--dataset_name", str(folder), "--class_column", "kind", "--streaming", "--max_train_steps", "2"
    )
    with pytest.raises(InvalidTrainingInput, match="with --streaming must be a ClassLabel column"):
        prepare_images(args)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--class_dropout", "0.2"], "--class_dropout needs --class_column."),
        (["--class_column", "auto", "--class_dropout", "1"], r"--class_dropout must lie in \[0, 1\), got 1.0."),
    ],
)
def test_bad_class_options_fail_at_parse_time(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        options(tmp_path, *extra)
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()[-1]) > 0
    with pytest.raises(InvalidTrainingInput, match=message):
        from training.arguments import build_parser, validate_args

        validate_args(build_parser().parse_args(["--output_dir", str(tmp_path / "out"), *extra]))


@pytest.mark.parametrize(("saved", "now"), [(10, None), (None, 10), (10, 4)])
def test_resuming_with_other_classes_is_refused_before_loading(tmp_path, saved, now):
    args = options(tmp_path)
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    write_unet_config(folder, build_unet(args, 1, 8, saved).config)
    with pytest.raises(InvalidTrainingInput, match="resume with the --class_column of the checkpoint's run"):
        unet = build_unet(args, 1, 8, now)
        check_compatible(folder, unet.config, unet.state_dict())


SMALL_RUN = [
    "--report_to", "none", "--max_train_samples", "96", "--train_batch_size", "16", "--num_train_timesteps", "50",
    "--lr_warmup_steps", "2", "--num_samples", "6", "--num_inference_steps", "10", "--num_eval_images", "8",
    "--eval_timesteps", "5", "--sample_every", "3", "--eval_every", "3", "--checkpointing_steps", "3",
    "--max_train_steps", "6", "--final_eval_timesteps", "7", "--class_column", "auto", "--class_dropout", "0.3",
]  # fmt: skip


def run_train(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN), *arguments], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_conditional_training_saves_class_names_measures_both_bounds_and_resumes_exactly(tmp_path):
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    assert run_train(*SMALL_RUN, "--output_dir", str(uninterrupted)).returncode == 0
    result = run_train(
        *SMALL_RUN, "--output_dir", str(resumed), "--resume_from_checkpoint", str(uninterrupted / "checkpoint-3")
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first = load_file(uninterrupted / "unet" / "diffusion_pytorch_model.safetensors")
    second = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(first[key], second[key]) for key in first)  # the label dropout replayed exactly

    pipe = SimpleDDPMPipeline.from_pretrained(uninterrupted)
    assert pipe.config.class_names == [str(d) for d in range(10)] and pipe.unet.config.num_class_embeds == 11
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    assert metrics["class_names"] == pipe.config.class_names
    assert metrics["training"]["class_column"] == "label" and metrics["training"]["class_dropout"] == 0.3
    # the held-out bounds, recomputed from the saved pipeline and train.py's held-out split
    data = prepare_images(options(tmp_path, "--class_column", "auto", "--num_eval_images", "8"))
    images = pixels_to_model_input(data.eval)
    for labels, key in ((data.eval_labels, "held_out_bits_per_dim"), (None, "held_out_bits_per_dim_unconditional")):
        bits = pipe.elbo(images, generator=torch.Generator().manual_seed(0), num_timesteps=7, class_labels=labels)
        assert metrics[key] == pytest.approx(bits.bits_per_dim.mean().item(), rel=1e-6)
    card = (uninterrupted / "README.md").read_text()
    assert "class_labels" in card and "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in card

    other = tmp_path / "unconditional"
    other.mkdir()
    subprocess.run(["cp", "-r", str(uninterrupted / "checkpoint-3"), str(other)], check=True)
    unconditional = [arg for arg in SMALL_RUN if arg not in ("--class_column", "auto", "--class_dropout", "0.3")]
    result = run_train(*unconditional, "--output_dir", str(other), "--resume_from_checkpoint", "latest")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Checkpoint")
    assert "is class-conditional with 10 classes (num_class_embeds=11) but this run is unconditional" in result.stderr
