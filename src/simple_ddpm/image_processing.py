"""8-bit images in and out of the model: any PIL mode to a fixed channel count and size, and sample grids.

The model sees x_0 in [-1, 1] on the 8-bit grid (x = k / 127.5 - 1, k = 0..255); these helpers stop at the uint8
pixels k, so that a training set can be decoded and resized once and kept as a small uint8 tensor.
"""

import math

import numpy as np
import torch
from PIL import Image

CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def is_grayscale(image: Image.Image) -> bool:
    """Whether the image has one colour channel (an alpha channel aside); palette images count as colour."""
    return image.mode in GRAYSCALE_MODES


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer and float grayscale to "L" by scaling the range, where PIL would clip at 255."""
    pixels = np.asarray(image)
    if image.mode == "F":
        scale = 1.0 if pixels.max(initial=0.0) <= 1.0 else 1 / 255  # floats in [0, 1] or in [0, 255]
        pixels = pixels * (255 * scale)
    elif pixels.max(initial=0) > 255:  # "I;16*" and "I" holding 16-bit values
        pixels = pixels.astype(np.float64) / 257
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def convert_to_channels(image: Image.Image, channels: int) -> Image.Image:
    """The image in mode "L", "RGB" or "RGBA" for 1, 3 or 4 channels.

    Transparent pixels are composited onto white for 1 and 3 channels (what a viewer shows; the colour stored
    under alpha 0 is often garbage), and 16-bit or float grayscale is rescaled rather than clipped.
    """
    if channels not in CHANNEL_MODES:
        raise ValueError(f"Unsupported channel count {channels}; valid values are: 1, 3, 4.")
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_bit_depth_to_8bit(image)
    target = CHANNEL_MODES[channels]
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha and channels != 4:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image if image.mode == target else image.convert(target)


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Resize (bicubic) so that the shorter side is `size`, keeping the aspect ratio."""
    if min(image.size) == size:
        return image
    scale = size / min(image.size)
    new_size = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
    return image.resize(new_size, Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_pixels(image: Image.Image, channels: int, size: int, crop: bool = True) -> np.ndarray:
    """uint8 pixels of shape (channels, H, W): converted, shorter side resized to `size`, center-cropped to
    `size` x `size` when `crop` (otherwise the longer side is kept, for a random crop later)."""
    image = resize_shorter_side(convert_to_channels(image, channels), size)
    if crop:
        image = center_crop(image, size)
    pixels = np.array(image, dtype=np.uint8)  # a writable copy, unlike np.asarray
    return pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def pixels_to_model_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels k to x_0 = k / 127.5 - 1 in [-1, 1], float32."""
    return pixels.float() / 127.5 - 1


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, cols) of the squarest grid that holds exactly `count` images."""
    rows = max(r for r in range(1, math.isqrt(count) + 1) if count % r == 0)
    return rows, count // rows


def image_grid(
    images: torch.Tensor, cell_size: int | None = None, padding: int = 1, cols: int | None = None
) -> Image.Image:
    """A PNG-ready grid of a batch of images in [0, 1], shape (B, C, H, W), C in (1, 3, 4).

    Cells are upscaled with nearest-neighbour to `cell_size` pixels (default: at least 32, an integer multiple of
    the image size) so that 8x8 samples can be looked at; `padding` pixels of white separate them. The grid is
    the squarest that holds the images exactly, or has `cols` columns, filled row by row.
    """
    count, channels, height, width = images.shape
    if cell_size is None:
        cell_size = max(height, width) * max(1, math.ceil(32 / max(height, width)))
    rows, cols = grid_shape(count) if cols is None else (-(-count // cols), cols)
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    mode = CHANNEL_MODES[channels]
    grid = Image.new(mode, (cols * (cell_size + padding) + padding, rows * (cell_size + padding) + padding), 255)
    for i, cell in enumerate(pixels):
        image = Image.fromarray(np.ascontiguousarray(cell[0] if channels == 1 else cell.transpose(1, 2, 0)))
        image = image.resize((cell_size, cell_size), Image.Resampling.NEAREST)
        row, col = divmod(i, cols)
        grid.paste(image, (padding + col * (cell_size + padding), padding + row * (cell_size + padding)))
    return grid
