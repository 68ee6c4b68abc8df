"""The `simple-ddpm` verbs' choices: --variance-type per call, defaults that adapt to the step count, arguments
checked before a model loads, and no warning from diffusers about how the CLI loads a model."""

import warnings

import numpy as np
import pytest
import test_cli
import test_cli_fid
import torch
from PIL import Image

from simple_ddpm import SimpleDDPMInpaintPipeline, SimpleDDPMPipeline, SimpleDDPMScheduler, cli, editing_commands

pipe_folder, image_folder = test_cli.pipe_folder, test_cli.image_folder  # the same fixtures
classifier = test_cli_fid.classifier


@pytest.fixture
def edit_files(tmp_path):
    """An 8x8 RGB image and a mask whose lower half is white (fill)."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[4:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path / "a.png", tmp_path / "mask.png"


def test_sample_with_variance_type_analytic_is_the_analytic_pipeline_and_leaves_the_folder(
    pipe_folder, image_folder, tmp_path
):
    assert cli.main(["analytic", str(pipe_folder), str(image_folder), "--num-images", "3", "--device", "cpu"]) == 0
    output = tmp_path / "out"
    command = ["sample", str(pipe_folder), "--output", str(output), "--num-images", "2", "--num-inference-steps", "4"]
    assert cli.main([*command, "--variance-type", "analytic", "--seed", "5", "--device", "cpu"]) == 0

    pipe = SimpleDDPMPipeline.from_pretrained(pipe_folder)
    assert pipe.scheduler.config.variance_type == "fixed_small"  # the folder's default is not changed
    pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, variance_type="analytic")
    pipe.set_progress_bar_config(disable=True)
    for i in range(2):
        image = pipe(generator=torch.Generator().manual_seed(5 + i), num_inference_steps=4, output_type="np")
        saved = np.asarray(Image.open(output / f"{i}.png"), dtype=np.float64) / 255
        assert np.abs(saved - image.images[0]).max() <= 1 / 255 + 1e-6
    fixed = pipe_folder.parent / "fixed"
    assert cli.main([*command[:3], str(fixed), *command[4:], "--seed", "5", "--device", "cpu"]) == 0
    assert not np.array_equal(np.asarray(Image.open(fixed / "0.png")), np.asarray(Image.open(output / "0.png")))


def refuse_loading(*args, **kwargs):
    raise AssertionError("the model was loaded before the arguments were checked")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["img2img", "{model}", "{a}", "--strength", "1.5"], "--strength must lie in (0, 1]"),
        (["img2img", "{model}", "{a}", "--strength", "0.05", "--num-inference-steps", "10"], "runs no step"),
        (["img2img", "{model}", "{a}", "--strength", "0.5", "--eta", "2"], "--eta must lie in [0, 1]"),
        (["img2img", "{model}", "{a}", "--strength", "0.5", "--guidance-scale", "2"], "--guidance-scale needs"),
        (
            ["inpaint", "{model}", "{a}", "{mask}", "--num-inference-steps", "10", "--jump-length", "10"],
            "--jump-length 10 does not fit 10 steps: pass --jump-length 9 or less, or --num-inference-steps 11",
        ),
        (["interpolate", "{model}", "{a}", "{a}", "--frames", "1"], "--frames must be at least 2"),
        (["sample", "{model}", "--eta", "2"], "eta must lie in [0, 1]"),
        (["sample", "{model}", "--scheduler", "dpm++", "--variance-type", "analytic"], "not to dpm++"),
        (["sample", "{model}", "--guidance-scale", "2"], "--guidance-scale needs --class"),
        (["fid", "{model}", "{model}", "--scheduler", "dpm++", "--eta", "0.5"], "--eta applies to the ddpm"),
    ],
)
def test_arguments_are_checked_before_the_model_loads(pipe_folder, edit_files, monkeypatch, capsys, argv, message):
    monkeypatch.setattr(cli, "load_pipeline", refuse_loading)
    monkeypatch.setattr(editing_commands, "load_pipeline", refuse_loading)
    monkeypatch.setattr(cli, "load_feature_extractor", refuse_loading)
    names = {"model": str(pipe_folder), "a": str(edit_files[0]), "mask": str(edit_files[1])}
    assert cli.main([part.format(**names) for part in argv] + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err  # the error alone: no thread line before it
    assert err.startswith(f"simple-ddpm {argv[0]}: error: ")


def test_inpaint_default_jump_length_shrinks_to_fit_the_steps_and_says_so(pipe_folder, edit_files, tmp_path, capsys):
    image, mask = edit_files
    out = tmp_path / "out"
    argv = ["inpaint", str(pipe_folder), str(image), str(mask), "--num-inference-steps", "5", "--seed", "2"]
    assert cli.main([*argv, "--jump-n-sample", "3", "--output", str(out), "--device", "cpu"]) == 0
    assert "--jump-length 4: the default 10 shrunk to fit 5 steps" in capsys.readouterr().out

    pipe = SimpleDDPMInpaintPipeline.from_pretrained(pipe_folder)
    pipe.set_progress_bar_config(disable=True)
    arguments = dict(num_inference_steps=5, jump_n_sample=3, output_type="np")
    explicit = pipe(
        Image.open(image), Image.open(mask), jump_length=4, generator=torch.Generator().manual_seed(2), **arguments
    )
    default = pipe(Image.open(image), Image.open(mask), generator=torch.Generator().manual_seed(2), **arguments)
    assert np.array_equal(explicit.images, default.images)  # the pipeline's own default adapts the same way
    saved = np.asarray(Image.open(out / "0.png"), dtype=np.float64) / 255
    assert np.abs(saved - explicit.images[0]).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "{model}", "--num-images", "1", "--num-inference-steps", "2", "--output", "{out}/s.png"],
        ["elbo", "{model}", "{images}", "--num-images", "1", "--estimator-timesteps", "2"],
        ["analytic", "{model}", "{images}", "--num-images", "1"],
        ["fid", "{model}", "{images}", "--features", "{classifier}", "--num-images", "2", "--cache-dir", "{out}"],
        ["inpaint", "{model}", "{a}", "{mask}", "--num-inference-steps", "2", "--output", "{out}/i.png"],
        ["img2img", "{model}", "{a}", "--strength", "0.5", "--num-inference-steps", "2", "--output", "{out}/e.png"],
        [
            "interpolate",
            "{model}",
            "{a}",
            "{a}",
            "--frames",
            "2",
            "--num-inference-steps",
            "2",
            "--output",
            "{out}/f.png",
        ],
    ],
    ids=lambda argv: argv[0],
)
def test_no_verb_warns_about_how_it_loads_the_model(
    pipe_folder, image_folder, edit_files, classifier, tmp_path, capfd, argv
):
    """diffusers' FutureWarning ("`torch_dtype` is deprecated") raised as an error here, over pyproject's filter that
    ignores FutureWarning; its "should be kept in float32" line is a log record on stderr."""
    names = {
        "model": str(pipe_folder),
        "images": str(image_folder),
        "out": str(tmp_path),
        "classifier": str(classifier),
    }
    names |= {"a": str(edit_files[0]), "mask": str(edit_files[1])}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        status = cli.main([part.format(**names) for part in argv] + ["--device", "cpu"])
    err = capfd.readouterr().err
    assert status == 0, err
    assert "should be kept in float32" not in err and "FutureWarning" not in err, err


@pytest.mark.parametrize("verb", ["sample", "elbo", "fid", "analytic", "inpaint", "img2img", "interpolate"])
def test_device_option_states_its_default_in_help(verb, capsys):
    with pytest.raises(SystemExit):
        cli.main([verb, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps help lines
    default = "cuda" if torch.cuda.is_available() else "cpu"
    assert "(default: cuda when torch sees a GPU, else cpu; here: " + default + ")" in text
