"""The `simple-ddpm` command on a tiny random pipeline: outputs checked against direct pipeline calls."""

import re
from importlib.metadata import entry_points

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch
from fake_hub import READ_TOKEN, WRITE_TOKEN, install_fake_hub
from PIL import Image
from tiny_pipeline import save_trained_folder, tiny_pipeline

from simple_ddpm import SimpleDDPMPipeline
from simple_ddpm.cli import build_parser, main
from simple_ddpm.image_processing import image_grid


@pytest.fixture
def pipe_folder(tmp_path):
    pipe = tiny_pipeline()
    save_trained_folder(pipe, tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def image_folder(tmp_path):
    """Five random 8x8 RGB images, as PNG files."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.png")
    return folder


def one_line_error(capsys, command: str) -> str:
    """The error line that ends stderr (progress bars may come before it); no traceback."""
    err = capsys.readouterr().err
    last_line = err.rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert last_line.startswith(f"simple-ddpm {command}: error: ") and "Traceback" not in err, err
    return last_line


def test_console_script_is_main():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "simple-ddpm"]
    assert script.load() is main


def test_sample_grid_holds_the_images_of_generators_seed_plus_i_whatever_the_batch(pipe_folder, tmp_path):
    grid_path = tmp_path / "grid.png"
    status = main(
        ["sample", str(pipe_folder), "--output", str(grid_path), "--num-images", "6", "--batch-size", "4"]
        + ["--num-inference-steps", "10", "--seed", "3", "--device", "cpu"]
    )
    assert status == 0

    pipe = SimpleDDPMPipeline.from_pretrained(pipe_folder)
    alone = [  # one image per call
        pipe(batch_size=1, generator=[torch.Generator().manual_seed(3 + i)], num_inference_steps=10, output_type="pt")[
            0
        ]
        for i in range(6)
    ]
    expected = image_grid(torch.cat(alone))
    assert expected.size == (3 * 33 + 1, 2 * 33 + 1)  # 2 x 3 cells of 8 x 8 pixels shown at 32 x 32, 1-pixel gaps
    np.testing.assert_array_equal(np.asarray(Image.open(grid_path)), np.asarray(expected))


def test_a_cpu_command_says_how_many_threads_it_uses(pipe_folder, tmp_path, capsys):
    status = main(["sample", str(pipe_folder), "--output", str(tmp_path / "grid.png"), "--num-images", "1"] + [
        "--num-inference-steps", "2", "--device", "cpu",
    ])  # fmt: skip
    assert status == 0
    threads = torch.get_num_threads()  # the conftest's OMP_NUM_THREADS, a chosen count, is kept
    assert f"simple-ddpm sample: {threads} CPU thread(s) per process (OMP_NUM_THREADS)" in capsys.readouterr().err


def test_sample_to_a_folder_writes_one_png_per_image(pipe_folder, tmp_path):
    status = main(
        ["sample", str(pipe_folder), "--output", str(tmp_path / "out"), "--num-images", "3"]
        + ["--num-inference-steps", "2"]
    )
    assert status == 0
    files = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in files] == ["0.png", "1.png", "2.png"]
    assert all(Image.open(f).size == (8, 8) and Image.open(f).mode == "RGB" for f in files)


def independent_bits_per_dim(pipe_folder, image_folder, seed, timesteps):
    """Per-image bounds computed directly: x_0 = pixel / 127.5 - 1, generator seed + i."""
    pipe = SimpleDDPMPipeline.from_pretrained(pipe_folder)
    bits = []
    for i, path in enumerate(sorted(image_folder.iterdir())):
        x0 = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)[None].double() / 127.5 - 1
        out = pipe.elbo(x0, generator=torch.Generator().manual_seed(seed + i), num_timesteps=timesteps)
        bits.append(out.bits_per_dim.item())
    bits = np.array(bits)
    return bits.mean(), bits.std(ddof=1) / np.sqrt(len(bits))


def printed_bits_per_dim(capsys) -> tuple[float, float]:
    out = capsys.readouterr().out
    match = re.search(r"bits/dim: ([\d.]+) ± ([\d.]+) \(mean ± standard error over 5 images", out)
    assert match, out
    return float(match.group(1)), float(match.group(2))


@pytest.mark.parametrize("timesteps", [None, 4])
def test_elbo_prints_mean_and_standard_error_of_per_image_bounds(pipe_folder, image_folder, capsys, timesteps):
    command = ["elbo", str(pipe_folder), str(image_folder), "--seed", "7", "--batch-size", "3"]
    assert main(command + (["--estimator-timesteps", str(timesteps)] if timesteps else [])) == 0

    mean, error = printed_bits_per_dim(capsys)
    expected_mean, expected_error = independent_bits_per_dim(pipe_folder, image_folder, 7, timesteps)
    assert mean == pytest.approx(expected_mean, abs=5e-5)
    assert error == pytest.approx(expected_error, abs=5e-5)


def test_elbo_on_a_saved_dataset_equals_elbo_on_the_same_images_as_files(pipe_folder, image_folder, tmp_path, capsys):
    paths = sorted(image_folder.iterdir())
    features = datasets.Features({"label": datasets.Value("int64"), "img": datasets.Image()})
    test_split = datasets.Dataset.from_dict({"label": [0] * 5, "img": [str(p) for p in paths]}, features=features)
    datasets.DatasetDict({"test": test_split}).save_to_disk(str(tmp_path / "saved"))

    assert main(["elbo", str(pipe_folder), str(image_folder), "--estimator-timesteps", "3"]) == 0
    from_files = printed_bits_per_dim(capsys)
    assert main(["elbo", str(pipe_folder), str(tmp_path / "saved"), "--estimator-timesteps", "3"]) == 0
    assert printed_bits_per_dim(capsys) == from_files


def test_elbo_reads_a_column_of_image_paths_named_by_image_column(pipe_folder, image_folder, tmp_path, capsys):
    paths = [str(p) for p in sorted(image_folder.iterdir())]
    datasets.Dataset.from_dict({"file": paths, "label": [0] * 5}).save_to_disk(str(tmp_path / "paths"))

    assert main(["elbo", str(pipe_folder), str(image_folder), "--estimator-timesteps", "3"]) == 0
    from_files = printed_bits_per_dim(capsys)
    assert (
        main(
            ["elbo", str(pipe_folder), str(tmp_path / "paths"), "--image-column", "file", "--estimator-timesteps", "3"]
        )
        == 0
    )
    assert printed_bits_per_dim(capsys) == from_files


def test_sample_and_elbo_load_a_repo_id_from_the_offline_cache(monkeypatch, tmp_path, image_folder, capsys):
    fake = install_fake_hub(monkeypatch)
    save_trained_folder(tiny_pipeline(), tmp_path / "trained")
    assert main(["push", str(tmp_path / "trained"), "alice/ddpm", "--token", WRITE_TOKEN]) == 0
    fake.export_to_cache("alice/ddpm", tmp_path / "cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))

    assert (
        main(
            ["sample", "alice/ddpm", "--output", str(tmp_path / "grid.png"), "--num-images", "4"]
            + ["--num-inference-steps", "2"]
        )
        == 0
    )
    assert Image.open(tmp_path / "grid.png").size == (2 * 33 + 1, 2 * 33 + 1)
    assert main(["elbo", "alice/ddpm", str(image_folder), "--estimator-timesteps", "2", "--seed", "1"]) == 0
    assert printed_bits_per_dim(capsys)[0] == pytest.approx(
        independent_bits_per_dim(tmp_path / "trained", image_folder, 1, 2)[0], abs=5e-5
    )


def test_push_uploads_the_folder_without_checkpoints_and_never_prints_the_token(monkeypatch, pipe_folder, capsys):
    fake = install_fake_hub(monkeypatch)
    tiny_pipeline().save_pretrained(pipe_folder / "checkpoint-10")

    assert main(["push", str(pipe_folder), "alice/ddpm", "--token", WRITE_TOKEN, "--private"]) == 0

    out, err = capsys.readouterr()
    assert "https://huggingface.co/alice/ddpm" in out
    assert WRITE_TOKEN not in out + err
    files = fake.files("alice/ddpm")
    assert {"model_index.json", "README.md", "metrics.json", "pipeline.py", "unet/config.json"} <= set(files)
    assert not [path for path in files if path.startswith("checkpoint-")]
    assert fake.repos["alice/ddpm"]["private"] is True


def test_push_with_an_empty_exclude_list_uploads_the_checkpoints_too(monkeypatch, pipe_folder):
    fake = install_fake_hub(monkeypatch)
    tiny_pipeline().save_pretrained(pipe_folder / "checkpoint-10")

    assert main(["push", str(pipe_folder), "alice/ddpm", "--token", WRITE_TOKEN, "--exclude"]) == 0
    assert "checkpoint-10/model_index.json" in fake.files("alice/ddpm")


def test_push_of_a_folder_without_a_card_fails_before_touching_the_hub(monkeypatch, tmp_path, capsys):
    fake = install_fake_hub(monkeypatch)
    tiny_pipeline().save_pretrained(tmp_path / "model")

    assert main(["push", str(tmp_path / "model"), "alice/ddpm", "--token", WRITE_TOKEN]) == 2
    assert "has no model card (README.md)" in one_line_error(capsys, "push")
    assert fake.calls == [] and fake.repos == {}


def test_push_with_a_read_only_token_fails_in_one_line(monkeypatch, pipe_folder, capsys):
    install_fake_hub(monkeypatch)
    assert main(["push", str(pipe_folder), "alice/ddpm", "--token", WRITE_TOKEN]) == 0
    capsys.readouterr()

    assert main(["push", str(pipe_folder), "alice/ddpm", "--token", READ_TOKEN]) == 2
    err = one_line_error(capsys, "push")
    assert "cannot write to alice/ddpm" in err and READ_TOKEN not in err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["sample", "{tmp}/missing"], "is neither an existing folder nor a Hub repo id"),
        (["sample", "{tmp}"], "is not a pipeline folder: it has no model_index.json"),
        (["sample", "nobody/nothing"], "Cannot load nobody/nothing"),
        (["elbo", "{model}", "{tmp}/empty"], "holds no image files"),
        (
            ["elbo", "{model}", "{tmp}/saved", "--split", "validation"],
            "has no split 'validation'; its splits are: test",
        ),
        (
            ["elbo", "{model}", "{tmp}/images", "--estimator-timesteps", "10"],
            r"--estimator-timesteps must be in \[1, 9\]",
        ),
        (["elbo", "{model}", "{tmp}/saved"], r"no image column \(columns: x\).*with --image-column"),
        (["elbo", "{model}", "{tmp}/two"], r"several image columns \(a, b\); choose one with --image-column"),
        (["elbo", "{model}", "{tmp}/two", "--image-column", "c"], "'c' is not a column; the columns are: a, b"),
        (["elbo", "{model}", "{tmp}/saved", "--image-column", "x"], "Column 'x' does not hold images"),
        (["elbo", "{model}", "{tmp}/broken", "--image-column", "f"], r"Cannot read image .*bad\.png of"),
        (["push", "{tmp}/missing", "alice/ddpm"], "is not a folder"),
        (["push", "{tmp}", "alice/ddpm", "--token", "x"], "is not a pipeline folder"),
    ],
)
def test_bad_input_ends_with_one_line_and_status_2(pipe_folder, image_folder, tmp_path, capsys, arguments, message):
    (tmp_path / "empty").mkdir()
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"x": [1]})}).save_to_disk(str(tmp_path / "saved"))
    png = str(next(image_folder.iterdir()))
    two = datasets.Dataset.from_dict(
        {"a": [png], "b": [png]}, features=datasets.Features(a=datasets.Image(), b=datasets.Image())
    )
    two.save_to_disk(str(tmp_path / "two"))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    datasets.Dataset.from_dict({"f": [str(tmp_path / "bad.png")]}).save_to_disk(str(tmp_path / "broken"))
    arguments = [a.format(tmp=tmp_path, model=pipe_folder) for a in arguments]
    capsys.readouterr()

    assert main(arguments) == 2
    assert re.search(message, one_line_error(capsys, arguments[0]))


def test_push_rewrites_a_trained_folders_card_for_the_repo_unless_asked_to_keep_it(monkeypatch, pipe_folder):
    fake = install_fake_hub(monkeypatch)
    assert str(pipe_folder) in (pipe_folder / "README.md").read_text()  # written by training for the folder

    assert main(["push", str(pipe_folder), "alice/ddpm", "--token", WRITE_TOKEN]) == 0
    card = fake.files("alice/ddpm")["README.md"]
    assert card == (pipe_folder / "README.md").read_bytes()
    assert b'SimpleDDPMPipeline.from_pretrained("alice/ddpm")' in card and b"**7.2500**" in card

    (pipe_folder / "README.md").write_text("---\nlicense: mit\n---\nMy own card.\n")
    assert main(["push", str(pipe_folder), "alice/other", "--token", WRITE_TOKEN, "--keep-card"]) == 0
    assert fake.files("alice/other")["README.md"] == b"---\nlicense: mit\n---\nMy own card.\n"


def test_push_of_a_folder_whose_metrics_are_not_trainings_asks_for_keep_card(monkeypatch, pipe_folder, capsys):
    fake = install_fake_hub(monkeypatch)
    (pipe_folder / "metrics.json").write_text('{"fid": 3.0}')

    assert main(["push", str(pipe_folder), "alice/ddpm", "--token", WRITE_TOKEN]) == 2
    assert "Pass --keep-card" in one_line_error(capsys, "push")
    assert fake.calls == []
    assert main(["push", str(pipe_folder), "alice/ddpm", "--token", WRITE_TOKEN, "--keep-card"]) == 0


@pytest.mark.parametrize(
    "command, old, new, value",
    [
        ("sample", "--steps", "--num-inference-steps", "7"),
        ("fid", "--num-samples", "--num-images", "12"),
        ("elbo", "--timesteps", "--estimator-timesteps", "5"),
    ],
)
def test_a_former_option_name_warns_and_means_what_the_new_name_means(command, old, new, value):
    positionals = {"sample": ["m"], "fid": ["m", "ref"], "elbo": ["m", "data"]}[command]
    with pytest.warns(FutureWarning, match=f"{old} is deprecated and will be removed; use {new}"):
        former = build_parser().parse_args([command, *positionals, old, value])
    current = build_parser().parse_args([command, *positionals, new, value])
    assert vars(former) == vars(current)
    assert old not in build_parser()._subparsers._group_actions[0].choices[command].format_help()


def test_one_name_per_idea_across_the_commands():
    """Reverse steps are --num-inference-steps and counts of images --num-images wherever a command has them, as in
    the pipeline's arguments; the bound's estimator has its own name."""
    commands = build_parser()._subparsers._group_actions[0].choices
    help_of = {name: parser.format_help() for name, parser in commands.items()}
    for name in ("sample", "fid"):
        assert "--num-inference-steps" in help_of[name] and "--num-images" in help_of[name]
    assert "--num-images" in help_of["elbo"] and "--estimator-timesteps" in help_of["elbo"]
    assert "stratified" in help_of["elbo"]
    for text in help_of.values():
        assert not re.search(r"--steps\b|--timesteps\b|--num-samples\b", text)
