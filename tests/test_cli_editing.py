"""`simple-ddpm inpaint`, `img2img` and `interpolate` on a tiny pipeline: outputs against direct pipeline calls, and
every bad image or mask as a one-line error."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import one_line_error
from tiny_pipeline import tiny_pipeline

from simple_ddpm import SimpleDDPMImg2ImgPipeline, SimpleDDPMInpaintPipeline, SimpleDDPMInversionPipeline
from simple_ddpm.cli import main


@pytest.fixture(scope="module")
def pipe_folder(tmp_path_factory):
    """One saved tiny pipeline for the whole module: the commands only read it."""
    folder = tmp_path_factory.mktemp("model")
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("a", "b"):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(paths[name])
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[4:, :] = 255
    paths["mask"] = tmp_path / "mask.png"
    Image.fromarray(mask).save(paths["mask"])
    return paths


def test_inpaint_writes_the_pipelines_results_and_keeps_the_black_region(pipe_folder, files, tmp_path):
    out = tmp_path / "out"
    argv = ["inpaint", str(pipe_folder), str(files["a"]), str(files["mask"]), "--num-inference-steps", "4"]
    assert (
        main(
            argv
            + ["--jump-length", "2", "--jump-n-sample", "2", "--num-images", "2", "--seed", "3"]
            + ["--output", str(out), "--device", "cpu"]
        )
        == 0
    )
    pipe = SimpleDDPMInpaintPipeline.from_pretrained(pipe_folder)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        Image.open(files["a"]),
        Image.open(files["mask"]),
        num_inference_steps=4,
        jump_length=2,
        jump_n_sample=2,
        batch_size=2,
        generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
    ).images
    original = np.asarray(Image.open(files["a"]))
    for i, image in enumerate(expected):
        written = np.asarray(Image.open(out / f"{i}.png"))
        assert np.array_equal(written, np.asarray(image))
        assert np.array_equal(written[:4], original[:4])  # the kept upper half, bit for bit


def test_img2img_grid_holds_the_pipelines_results(pipe_folder, files, tmp_path):
    grid = tmp_path / "grid.png"
    argv = ["img2img", str(pipe_folder), str(files["a"]), "--strength", "0.5", "--num-inference-steps", "10"]
    assert main(argv + ["--num-images", "3", "--output", str(grid), "--device", "cpu"]) == 0
    pipe = SimpleDDPMImg2ImgPipeline.from_pretrained(pipe_folder)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        Image.open(files["a"]),
        strength=0.5,
        num_inference_steps=10,
        batch_size=3,
        generator=[torch.Generator().manual_seed(s) for s in range(3)],
        output_type="np",
    ).images
    cells = np.asarray(Image.open(grid))  # 1 row of 3 cells of 32 px, 1 px padding
    for i, image in enumerate(expected):
        cell = cells[1:33, 1 + 33 * i : 33 + 33 * i : 4][::4]
        assert np.array_equal(cell, (image * 255).round().astype(np.uint8))


def test_interpolate_writes_a_strip_and_a_gif(pipe_folder, files, tmp_path):
    strip = tmp_path / "morph.png"
    argv = ["interpolate", str(pipe_folder), str(files["a"]), str(files["b"]), "--frames", "4"]
    assert main(argv + ["--num-inference-steps", "5", "--output", str(strip), "--device", "cpu"]) == 0
    pipe = SimpleDDPMInversionPipeline.from_pretrained(pipe_folder)
    pipe.set_progress_bar_config(disable=True)
    frames = pipe.interpolate(
        Image.open(files["a"]), Image.open(files["b"]), num_frames=4, num_inference_steps=5, output_type="np"
    ).images
    cells = np.asarray(Image.open(strip))
    assert cells.shape == (34, 4 * 33 + 1, 3)
    for i, frame in enumerate(frames):
        assert np.array_equal(cells[1:33:4, 1 + 33 * i : 33 + 33 * i : 4], (frame * 255).round().astype(np.uint8))
    with Image.open(strip.with_suffix(".gif")) as gif:
        assert gif.n_frames == 2 * 4 - 2  # there and back
        assert gif.size == (128, 128)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inpaint", "{model}", "{missing}", "{mask}"], "IMAGE {missing}: no such file."),
        (["inpaint", "{model}", "{a}", "{a}"], "The mask has mode 'RGB'; a mask is a grayscale image"),
        (["inpaint", "{model}", "{small}", "{mask}"], "The image is 4x4 but the model's images are 8x8"),
        (["inpaint", "{model}", "{a}", "{small_mask}"], "The mask is 4x4 but the model's images are 8x8"),
        (["inpaint", "{model}", "{a}", "{black}"], "The mask has no white pixel: nothing to fill"),
        (["inpaint", "{model}", "{a}", "{white}"], "The mask is white everywhere: nothing is kept"),
        (["inpaint", "{model}", "{a}", "{not_image}"], "Cannot read MASK"),
        (["img2img", "{model}", "{a}", "--strength", "0"], "strength must lie in (0, 1]"),
        (["img2img", "{model}", "{a}", "--strength", "1.2"], "strength must lie in (0, 1]"),
        (
            ["img2img", "{model}", "{a}", "--strength", "0.5", "--class", "1"],
            "--class needs a class-conditional model",
        ),
        (
            ["img2img", "{model}", "{a}", "--strength", "0.5", "--guidance-scale", "2"],
            "--guidance-scale needs --class",
        ),
        (["interpolate", "{model}", "{a}", "{small}"], "The second image is 4x4"),
        (["interpolate", "{model}", "{a}", "{b}", "--frames", "1"], "--frames must be at least 2"),
    ],
)
def test_bad_editing_input_is_a_one_line_error(pipe_folder, files, tmp_path, capsys, argv, message):
    Image.new("RGB", (4, 4)).save(tmp_path / "small.png")
    Image.new("L", (4, 4), 255).save(tmp_path / "small_mask.png")
    Image.new("L", (8, 8), 0).save(tmp_path / "black.png")
    Image.new("L", (8, 8), 255).save(tmp_path / "white.png")
    (tmp_path / "not_image.png").write_text("not a PNG")
    names = {name: str(tmp_path / f"{name}.png") for name in ("small", "small_mask", "black", "white", "not_image")}
    names |= {"model": str(pipe_folder), "missing": str(tmp_path / "missing.png")} | {
        k: str(v) for k, v in files.items()
    }
    argv = [part.format(**names) for part in argv]
    assert main(argv + ["--num-inference-steps", "2", "--device", "cpu"]) == 2
    assert message.format(**names) in one_line_error(capsys, argv[0])
