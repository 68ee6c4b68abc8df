"""A folder of awkward files trains: unreadable images are skipped, counted and named in a warning; every PIL
mode that decodes becomes the model's channels with the right colours; other files are not listed at all."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_runs import run

from simple_ddpm.image_processing import to_pixels

RED, BLUE = (255, 0, 0), (0, 0, 255)


def awkward_folder(folder: Path) -> Path:
    """12 ordinary RGB images and one of each awkward kind."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"good_{i:02d}.png")
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(png, "PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[:60])  # the header survives, the pixels do not
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    Image.new("RGB", (1, 1), (10, 200, 30)).save(folder / "one_pixel.png")
    Image.fromarray(np.full((8, 8), 257 * 100, dtype=np.uint16)).save(folder / "sixteen_bit.png")  # mode I;16
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(folder / "cmyk.jpg")  # red in ink
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([*BLUE, *RED] + [0] * (256 * 3 - 6))
    palette.paste(1, (0, 0, 4, 8))  # left half red; right half entry 0, transparent
    palette.save(folder / "palette.png", transparency=0)
    return folder


def test_each_awkward_image_decodes_to_the_colours_a_viewer_shows(tmp_path):
    folder = awkward_folder(tmp_path / "images")
    pixels = {name: to_pixels(Image.open(folder / name), 3, 8).transpose(1, 2, 0) for name in (
        "one_pixel.png", "sixteen_bit.png", "cmyk.jpg", "palette.png")}  # fmt: skip
    assert (pixels["one_pixel.png"] == (10, 200, 30)).all()  # upscaled, still the one colour
    assert (pixels["sixteen_bit.png"] == 100).all()  # 25700 / 257, not clipped to 255
    assert np.abs(pixels["cmyk.jpg"].astype(int) - RED).max() <= 2  # JPEG rounding only
    assert (pixels["palette.png"][:, :4] == RED).all()
    assert (pixels["palette.png"][:, 4:] == 255).all()  # transparent: the white a viewer shows, not the blue


@pytest.mark.slow
def test_a_folder_with_broken_and_odd_files_trains_and_names_the_skipped_ones(tmp_path):
    folder = awkward_folder(tmp_path / "images")
    output_dir = tmp_path / "run"
    trained = run(
        output_dir, "--train_data_dir", str(folder), "--resolution", "8", "--max_train_samples", "16",
        "--train_batch_size", "4", "--max_train_steps", "2", "--eval_fraction", "0.2",
    )  # fmt: skip
    warning = next(line for line in trained.output().splitlines() if "Skipped" in line)
    assert "Skipped 2 unreadable image(s)" in warning
    assert f"{folder / 'truncated.png'} (image file is truncated)" in warning
    assert f"{folder / 'empty.png'} (cannot identify image file" in warning
    assert "notes.txt" not in trained.output()  # imagefolder lists image extensions only
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["skipped_images"] == 2
    assert metrics["training"]["channels"] == 3  # colour images among them: RGB, not grayscale
