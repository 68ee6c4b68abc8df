"""Bad input to training/train.py ends it with one clear line before any training step."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from simple_ddpm.image_datasets import DatasetInputError
from training.arguments import InvalidTrainingInput, parse_args
from training.checkpoints import UNET_CONFIG_NAME, check_compatible, check_training_state, write_unet_config
from training.image_data import prepare_images
from training.unet_presets import build_unet

ROOT = Path(__file__).resolve().parents[1]


def options(tmp_path: Path, *extra: str):
    return parse_args(["--output_dir", str(tmp_path / "out"), *extra])


def run_train(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "training" / "train.py"), "--report_to", "none", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )


def image_folder(folder: Path, count: int, size: int = 8) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_unknown_preset_is_refused_with_the_valid_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model_preset", "huge"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'huge'" in error and "tiny" in error and "ddpm-cifar10" in error


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("--prediction_type", "noise", "v_prediction"),
        ("--loss_weighting", "snr", "min_snr"),
        ("--beta_schedule", "quadratic", "squaredcos_cap_v2"),
        ("--mixed_precision", "fp8", "bf16"),
        ("--report_to", "mlflow", "tensorboard"),
    ],
)
def test_unknown_option_value_lists_the_valid_ones(capsys, option, value, valid):
    with pytest.raises(SystemExit):
        parse_args([option, value])
    assert valid in capsys.readouterr().err


def test_missing_resume_checkpoint_fails_at_parse_time(tmp_path, capsys):
    with pytest.raises(SystemExit):
        options(tmp_path, "--resume_from_checkpoint", str(tmp_path / "nowhere"))
    assert "does not exist" in capsys.readouterr().err


def test_unwritable_output_dir_fails_at_parse_time(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        parse_args(["--output_dir", str(blocker / "run")])
    assert "is not writable" in capsys.readouterr().err


def test_missing_dataset_is_named(tmp_path):
    with pytest.raises(InvalidTrainingInput, match="no-such-dataset.*not found"):
        prepare_images(options(tmp_path, "--dataset_name", str(tmp_path / "no-such-dataset")))


def test_empty_dataset_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidTrainingInput, match="Dataset .*empty is empty"):
        prepare_images(options(tmp_path, "--train_data_dir", str(tmp_path / "empty")))
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    for i in range(4):
        (unreadable / f"{i}.png").write_bytes(b"not an image")
    with pytest.raises(InvalidTrainingInput, match="No readable images among the first 3"):
        prepare_images(options(tmp_path, "--train_data_dir", str(unreadable)))


def test_missing_split_lists_the_splits(tmp_path):
    with pytest.raises(InvalidTrainingInput, match="has no split 'validation'; its splits are: train"):
        prepare_images(options(tmp_path, "--split", "validation"))


def test_dataset_without_images_asks_for_an_image_column(tmp_path):
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(tmp_path / "text")
    with pytest.raises(DatasetInputError, match=r"no image column \(columns: text, label\).*--image_column"):
        prepare_images(options(tmp_path, "--dataset_name", str(tmp_path / "text")))


def test_wrong_image_column_lists_the_columns(tmp_path):
    with pytest.raises(DatasetInputError, match="'picture' is not a column; the columns are: image, label"):
        prepare_images(options(tmp_path, "--image_column", "picture"))


def test_image_column_of_numbers_is_refused_in_one_line(tmp_path):
    datasets.Dataset.from_dict({"pixels": [1, 2], "label": [0, 1]}).save_to_disk(tmp_path / "numbers")
    options_ = options(tmp_path, "--dataset_name", str(tmp_path / "numbers"), "--image_column", "pixels")
    with pytest.raises(DatasetInputError, match="Column 'pixels' does not hold images"):
        prepare_images(options_)


def test_corrupt_images_are_skipped_with_a_warning_that_names_them(tmp_path):
    folder = image_folder(tmp_path / "images", 9)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.warns(
        UserWarning, match=r"Skipped 1 unreadable image\(s\) in the (training|held-out) data: .*broken\.png"
    ):
        data = prepare_images(options(tmp_path, "--train_data_dir", str(folder), "--eval_fraction", "0.2"))
    assert len(data.train) + len(data.eval) == 9
    assert data.num_skipped == 1


@pytest.mark.parametrize("streaming", [False, True])
def test_a_decompression_bomb_is_skipped_like_any_unreadable_image(tmp_path, monkeypatch, streaming):
    folder = image_folder(tmp_path / "images", 9)
    Image.new("L", (64, 64)).save(folder / "0-bomb.png")  # 4,096 pixels: over twice the limit set below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    extra = ["--streaming", "--max_train_steps", "1", "--num_eval_images", "2"] if streaming else []
    with pytest.warns(UserWarning, match=r"0-bomb\.png"):
        data = prepare_images(options(tmp_path, "--train_data_dir", str(folder), "--eval_fraction", "0.2", *extra))
    assert len(data.eval) >= 1


def test_resolution_the_unet_cannot_halve_is_refused(tmp_path):
    args = options(tmp_path, "--model_preset", "small")
    with pytest.raises(InvalidTrainingInput, match="Resolution 10 is not divisible by 4"):
        build_unet(args, channels=1, resolution=10)


def test_checkpoint_of_another_model_is_refused_before_loading(tmp_path):
    tiny = build_unet(options(tmp_path), channels=1, resolution=8)
    small = build_unet(options(tmp_path, "--model_preset", "small"), channels=1, resolution=8)
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, folder / "model.safetensors")
    write_unet_config(folder, tiny.config)
    check_compatible(folder, tiny.config, tiny.state_dict())  # its own model fits
    with pytest.raises(InvalidTrainingInput, match="is from a different model.*block_out_channels"):
        check_compatible(folder, small.config, small.state_dict())
    (folder / UNET_CONFIG_NAME).unlink()  # without the config, the weights' shapes still tell
    with pytest.raises(InvalidTrainingInput, match="does not fit the model"):
        check_compatible(folder, small.config, small.state_dict())


def test_checkpoint_without_counters_or_the_ema_the_run_needs_is_refused_before_loading(tmp_path):
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    with pytest.raises(InvalidTrainingInput, match="is incomplete: it has no training_progress.json"):
        check_training_state(folder, use_ema=False)
    (folder / "training_progress.json").write_text("{}")
    check_training_state(folder, use_ema=False)
    with pytest.raises(InvalidTrainingInput, match="has no EMA .* trained with --no-use_ema"):
        check_training_state(folder, use_ema=True)
    (folder / "ema.safetensors").write_bytes(b"")
    with pytest.raises(InvalidTrainingInput, match="has ema.safetensors but no ema.json"):
        check_training_state(folder, use_ema=True)
    (folder / "ema.json").write_text("{}")
    check_training_state(folder, use_ema=True)
    earlier = tmp_path / "checkpoint-8"  # as simple_ddpm wrote them before: accelerate's pickles
    earlier.mkdir()
    (earlier / "custom_checkpoint_0.pkl").write_bytes(b"")
    (earlier / "custom_checkpoint_1.pkl").write_bytes(b"")
    check_training_state(earlier, use_ema=True)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--dataset_name", "{tmp}/missing"], "error: Dataset {tmp}/missing not found"),
        (["--image_column", "picture"], "error: --image_column 'picture' is not a column"),  # simple_ddpm's check
    ],
)
def test_bad_input_in_the_script_is_one_line_and_exit_status_2(tmp_path, arguments, message):
    result = run_train("--output_dir", str(tmp_path / "out"), *(a.format(tmp=tmp_path) for a in arguments))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message.format(tmp=tmp_path))
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    output_dir = tmp_path / "out"
    # A learning rate of 1e30 makes Adam's first update ~1e30 per weight: the second forward overflows.
    result = run_train(
        "--output_dir", str(output_dir), "--max_train_samples", "64", "--train_batch_size", "16",
        "--learning_rate", "1e30", "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
        "--checkpointing_steps", "1", "--max_train_steps", "5", "--sample_every", "0", "--eval_every", "0",
    )  # fmt: skip
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "the loss is nan at step 2" in message or "the loss is inf at step 2" in message
    assert message.endswith(f"Last good checkpoint: {output_dir / 'checkpoint-1'}.")
    assert [p.name for p in output_dir.glob("checkpoint-*")] == ["checkpoint-1"]
    assert not (output_dir / "model_index.json").exists()
    from safetensors.torch import load_file

    weights = load_file(output_dir / "checkpoint-1" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    config = json.loads((output_dir / "checkpoint-1" / UNET_CONFIG_NAME).read_text())
    assert config["sample_size"] == 8
    # The checkpoint loads: a resumed run continues at step 2 (and meets the same overflow there).
    resumed = run_train(*result.args[4:], "--resume_from_checkpoint", str(output_dir / "checkpoint-1"))
    assert "at step 2;" in resumed.stderr.strip().splitlines()[-1]


def test_pruning_keeps_the_newest_checkpoints_by_step_not_by_name(tmp_path):
    from training.checkpoints import list_checkpoints, prune_checkpoints, resolve_resume

    for step in (9, 10, 100, 11, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-final-notes").mkdir()  # not a checkpoint: never listed, never deleted
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-11", "checkpoint-100"]
    assert (tmp_path / "checkpoint-final-notes").is_dir()
    assert resolve_resume("latest", tmp_path) == tmp_path / "checkpoint-100"
    assert resolve_resume("latest", tmp_path / "checkpoint-final-notes") is None  # a first run


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--vlb_weight", "0.01"], "--vlb_weight with --variance_type fixed_small would train nothing"),
        (["--loss_type", "vlb", "--vlb_weight", "1"], "--vlb_weight weighs L_vlb in L_hybrid; --loss_type vlb"),
        (["--loss_type", "vlb", "--loss_weighting", "min_snr"], "--loss_weighting min_snr weighs the MSE"),
        (["--variance_type", "learned_range", "--vlb_weight", "-1"], "--vlb_weight must be >= 0, got -1.0"),
        (["--loss_weighting", "p2", "--p2_k", "0"], "--p2_k must be positive"),
        (["--log_normal_std", "0.5"], "--log_normal_std needs --timestep_sampling log_normal"),
        (
            ["--timestep_sampling", "log_normal", "--log_normal_std", "0"],
            "--log_normal_std must be finite and > 0, got 0.0",
        ),
        (["--timestep_sampling", "log_normal", "--log_normal_mean", "nan"], "--log_normal_mean must be finite"),
        (
            ["--timestep_sampling", "log_normal", "--loss_type", "vlb"],
            "--timestep_sampling log_normal reweights the loss of each timestep",
        ),
        (["--recipe", "likelihood", "--loss_type", "vlb"], "--timestep_sampling log_normal (--recipe likelihood's)"),
    ],
)
def test_objective_options_that_do_not_fit_together_are_one_line_exit_2(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        options(tmp_path, *arguments)
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"error: {message}" in last_line  # usage lines above, the one-line reason last


def test_objective_defaults_and_the_combinations_that_make_sense_parse(tmp_path):
    assert options(tmp_path, "--variance_type", "learned_range").vlb_weight == 0.001
    assert options(tmp_path, "--variance_type", "learned", "--vlb_weight", "0.01").vlb_weight == 0.01
    pure_vlb = options(tmp_path, "--loss_type", "vlb", "--timestep_sampling", "importance")  # fixed variance
    assert (pure_vlb.variance_type, pure_vlb.loss_type, pure_vlb.timestep_sampling) == (
        "fixed_small",
        "vlb",
        "importance",
    )


def test_learned_variance_with_a_pretrained_unet_of_c_outputs_is_one_line_naming_both_numbers(tmp_path):
    from diffusers import UNet2DModel

    UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    ).save_pretrained(tmp_path / "unet")  # fmt: skip
    args = options(tmp_path, "--model_config_name_or_path", str(tmp_path / "unet"), "--variance_type", "learned_range")
    with pytest.raises(InvalidTrainingInput, match="has 1 output channels; --variance_type learned_range needs 2"):
        build_unet(args, channels=1, resolution=8)


def test_checkpoint_of_the_other_timestep_sampling_is_refused_before_loading(tmp_path):
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    (folder / "training_progress.json").write_text("{}")
    with pytest.raises(InvalidTrainingInput, match="trained with --timestep_sampling uniform .*no timestep_sampler"):
        check_training_state(folder, use_ema=False, timestep_sampling="importance")
    (folder / "timestep_sampler.safetensors").write_bytes(b"")
    with pytest.raises(InvalidTrainingInput, match="trained with --timestep_sampling importance; resume it with"):
        check_training_state(folder, use_ema=False, timestep_sampling="uniform")
    check_training_state(folder, use_ema=False, timestep_sampling="importance")


def test_own_data_without_a_step_budget_warns_that_it_gets_the_quickstarts(tmp_path):
    folder = image_folder(tmp_path / "images", 2)
    with pytest.warns(UserWarning, match=r"No --max_train_steps or --num_epochs: .*quickstart's 2000 steps"):
        args = options(tmp_path, "--train_data_dir", str(folder))
    assert args.max_train_steps == 2000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stated budget, or the quickstart's own data, is silent
        options(tmp_path, "--train_data_dir", str(folder), "--max_train_steps", "5")
        options(tmp_path, "--dataset_name", str(folder), "--num_epochs", "3")
        options(tmp_path)


def test_large_images_without_resolution_are_refused_and_train_with_it(tmp_path):
    folder = image_folder(tmp_path / "photos", 4, size=96)
    with pytest.raises(InvalidTrainingInput, match=r"shorter side is 96 pixels, .*at 96 x 96; pass --resolution"):
        prepare_images(options(tmp_path, "--train_data_dir", str(folder), "--max_train_steps", "1"))
    data = prepare_images(
        options(tmp_path, "--train_data_dir", str(folder), "--max_train_steps", "1", "--resolution", "16")
    )
    assert data.resolution == 16 and data.train.shape[-2:] == (16, 16)
    small = image_folder(tmp_path / "small", 4, size=64)  # up to 64 pixels, the first image's size is taken
    assert prepare_images(options(tmp_path, "--train_data_dir", str(small), "--max_train_steps", "1")).resolution == 64
