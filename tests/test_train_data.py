"""The training data path: the embedded digits, PIL modes to channels, decode-once caching, batches and grids."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simple_ddpm import image_processing
from simple_ddpm.image_processing import convert_to_channels, image_grid, to_pixels
from training import image_data
from training.arguments import parse_args
from training.image_data import (
    batches_per_epoch,
    crop_and_flip,
    digits_dataset,
    epoch_batches,
    prepare_images,
)


def make_image_folder(folder: Path, images: list[Image.Image]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i:03d}.png")
    return folder


def options(tmp_path: Path, *extra: str):
    return parse_args(["--output_dir", str(tmp_path / "out"), *extra])


def test_digits_default_is_sklearn_digits_scaled_to_8_bits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    dataset = digits_dataset()
    assert len(dataset) == 1797
    for i in (0, 1, 1796):
        expected = np.round(digits.images[i] / 16 * 255).astype(np.uint8)
        assert np.array_equal(np.asarray(dataset[i]["image"]), expected)
        assert dataset[i]["label"] == digits.target[i]


def test_grayscale_modes_become_one_channel_with_16_bit_values_rescaled_not_clipped():
    levels = np.array([[0, 257 * 10, 257 * 200, 65535]], dtype=np.uint16)
    sixteen_bit = Image.fromarray(levels)
    assert sixteen_bit.mode.startswith("I;16")
    assert np.array_equal(np.asarray(convert_to_channels(sixteen_bit, 1)), [[0, 10, 200, 255]])

    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.array_equal(np.asarray(convert_to_channels(floats, 1)), [[0, 128, 255]])

    binary = Image.fromarray(np.array([[True, False]]))
    assert np.array_equal(np.asarray(convert_to_channels(binary, 1)), [[255, 0]])


def test_transparent_pixels_are_composited_on_white_and_rgb_keeps_colour():
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    image = Image.fromarray(rgba)
    rgb = np.asarray(convert_to_channels(image, 3)).astype(int)
    # alpha compositing over white: c * a + 255 * (1 - a)
    expected = np.round(rgba[..., :3] * (rgba[..., 3:] / 255) + 255 * (1 - rgba[..., 3:] / 255))
    assert np.abs(rgb - expected).max() <= 1
    gray = np.asarray(convert_to_channels(image, 1)).astype(int)
    luma = np.round(expected @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(gray - luma).max() <= 1
    assert np.array_equal(np.asarray(convert_to_channels(image, 4)), rgba)


def test_palette_image_converts_through_its_palette():
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([10, 20, 30, 200, 100, 0] + [0] * (256 * 3 - 6))
    palette_image.putpixel((0, 0), 0)
    palette_image.putpixel((1, 0), 1)
    assert np.array_equal(np.asarray(convert_to_channels(palette_image, 3)), [[[10, 20, 30], [200, 100, 0]]])


def test_resize_keeps_aspect_and_center_crop_takes_the_middle():
    # 16 wide, 8 high: columns hold their index; the shorter side is already 8, so only the crop acts.
    image = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 10, (8, 1)))
    pixels = to_pixels(image, 1, 8)
    assert pixels.shape == (1, 8, 8)
    assert np.array_equal(pixels[0, 0], np.arange(4, 12) * 10)
    uncropped = to_pixels(image, 1, 4, crop=False)
    assert uncropped.shape == (1, 4, 8)


def test_images_are_decoded_once_not_per_epoch(tmp_path, monkeypatch):
    calls = []
    original = image_data.to_pixels
    monkeypatch.setattr(image_data, "to_pixels", lambda *a, **k: calls.append(1) or original(*a, **k))
    args = options(tmp_path, "--max_train_samples", "100")
    data = prepare_images(args)
    decoded = len(calls)
    assert decoded == len(data.train) + len(data.eval)
    for epoch in range(3):
        for indices in epoch_batches(len(data.train), 16, 0, epoch, 0, 1):
            crop_and_flip(data.train[indices], data.resolution, False, True)
    assert len(calls) == decoded
    assert data.train.dtype == torch.uint8 and data.channels == 1 and data.resolution == 8


def test_held_out_images_are_a_seeded_split_disjoint_from_the_training_images(tmp_path):
    data = prepare_images(options(tmp_path))
    parts = digits_dataset().train_test_split(test_size=0.1, seed=0)
    expected_train = np.stack([np.asarray(image) for image in parts["train"]["image"]])
    expected_eval = np.stack([np.asarray(image) for image in parts["test"]["image"]])
    assert np.array_equal(data.train[:, 0].numpy(), expected_train)
    assert np.array_equal(data.eval[:, 0].numpy(), expected_eval)
    assert len(data.train) + len(data.eval) == 1797


def test_grayscale_folder_stays_one_channel_and_colour_folder_gets_three(tmp_path):
    rng = np.random.default_rng(0)
    gray = [Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)) for _ in range(6)]
    colour = [Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)) for _ in range(6)]
    gray_data = prepare_images(options(tmp_path, "--train_data_dir", str(make_image_folder(tmp_path / "g", gray))))
    colour_dir = make_image_folder(tmp_path / "c", colour)
    colour_data = prepare_images(options(tmp_path, "--train_data_dir", str(colour_dir)))
    assert (gray_data.channels, gray_data.resolution) == (1, 12)
    assert (colour_data.channels, colour_data.resolution) == (3, 12)
    first = colour_data.train[0].permute(1, 2, 0).numpy()
    assert any(np.array_equal(first, np.asarray(image)) for image in colour)


def test_each_epoch_partitions_the_images_across_processes():
    num_images, batch, processes = 50, 4, 2
    per_epoch = batches_per_epoch(num_images, batch, processes)
    assert per_epoch == 6
    orders = []
    for epoch in range(2):
        shards = [torch.cat(list(epoch_batches(num_images, batch, 0, epoch, p, processes))) for p in range(processes)]
        assert not set(shards[0].tolist()) & set(shards[1].tolist())
        seen = torch.cat(shards)
        assert len(seen) == per_epoch * batch * processes and len(set(seen.tolist())) == len(seen)
        orders.append(seen)
    assert not torch.equal(orders[0], orders[1])
    resumed = list(epoch_batches(num_images, batch, 0, 1, 1, processes, start=4))
    from_start = list(epoch_batches(num_images, batch, 0, 1, 1, processes))
    assert all(torch.equal(a, b) for a, b in zip(resumed, from_start[4:], strict=True))


def test_random_crop_takes_every_offset_within_the_image_and_flip_mirrors():
    image = torch.arange(12, dtype=torch.uint8).view(1, 1, 12).expand(1, 4, 12).contiguous()
    torch.manual_seed(0)
    lefts = {int(crop_and_flip([image] * 8, 4, True, False)[i, 0, 0, 0]) for _ in range(20) for i in range(8)}
    assert lefts == set(range(9))  # 12 - 4 + 1 offsets
    square = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    flipped = crop_and_flip(square.expand(64, 1, 4, 4), 4, False, True)
    is_flipped = [torch.equal(f, square[0].flip(-1)) for f in flipped]
    assert all(torch.equal(f, square[0]) or flip for f, flip in zip(flipped, is_flipped, strict=True))
    assert 0 < sum(is_flipped) < 64


@pytest.mark.parametrize("size", [8, 5])
def test_sample_grid_upscales_each_image_with_nearest_neighbour(size):
    images = torch.rand(6, 1, size, size)
    grid = image_grid(images, padding=1)
    cell = size * -(-32 // size)  # the smallest multiple of size >= 32
    rows, cols = image_processing.grid_shape(6)
    assert grid.size == (cols * (cell + 1) + 1, rows * (cell + 1) + 1)
    pixels = np.asarray(grid)
    expected = (images[4, 0] * 255).round().to(torch.uint8).numpy()
    row, col = divmod(4, cols)
    top, left = 1 + row * (cell + 1), 1 + col * (cell + 1)
    upscaled = pixels[top : top + cell, left : left + cell]
    assert np.array_equal(upscaled[:: cell // size, :: cell // size], expected)


def test_a_column_of_image_paths_is_read_as_images(tmp_path):
    (tmp_path / "csv").mkdir()
    rows = ["file,label"]
    for level in range(6):
        path = tmp_path / f"{level}.png"
        Image.fromarray(np.full((8, 8), level * 40, np.uint8)).save(path)
        rows.append(f"{path},{level % 2}")
    (tmp_path / "csv" / "train.csv").write_text("\n".join(rows))
    args = options(tmp_path, "--dataset_name", str(tmp_path / "csv"), "--image_column", "file")
    data = prepare_images(args)
    levels = sorted(torch.cat([data.train, data.eval])[:, 0, 0, 0].tolist())
    assert levels == [0, 40, 80, 120, 160, 200]
