"""A user's image and mask for the editing pipelines (inpainting, image-to-image, inversion), checked against the
model and converted to model space: x_0 = k / 127.5 - 1 for 8-bit pixels k, and a boolean mask, True = fill.

Images are taken as the model makes them: the same height and width (no resizing, so that the pixels kept by
inpainting are the user's own) and the model's channels (a grayscale image for a colour model is exact, a colour
image for a grayscale model is refused rather than silently converted). Tensors are x_0 already, in [-1, 1].
"""

import numpy as np
import torch
from PIL import Image

from .image_processing import convert_to_channels, is_grayscale
from .scheduling_simple_ddpm import SimpleDDPMScheduler

ImageInput = Image.Image | list[Image.Image] | torch.Tensor
MaskInput = Image.Image | list[Image.Image] | torch.Tensor


def _as_list(images: Image.Image | list[Image.Image]) -> list[Image.Image]:
    return [images] if isinstance(images, Image.Image) else list(images)


def _check_size(image: Image.Image, height: int, width: int, what: str) -> None:
    if image.size != (width, height):
        raise ValueError(
            f"The {what} is {image.width}x{image.height} but the model's images are {width}x{height}; resize or crop "
            "it first."
        )


def image_to_model_input(
    image: ImageInput, channels: int, height: int, width: int, what: str = "image"
) -> torch.Tensor:
    """x_0 of shape (B, channels, height, width), float32 in [-1, 1].

    Args:
        image: a PIL image or a list of them, or a tensor of x_0 in [-1, 1] shaped (C, H, W) or (B, C, H, W).
        channels, height, width: the model's image format.
        what: how errors name the image.
    Raises:
        ValueError: one line, for a wrong size, a colour image for a grayscale model, a tensor of the wrong shape,
            dtype or range.
    """
    if isinstance(image, torch.Tensor):
        x = image[None] if image.ndim == 3 else image
        if x.ndim != 4 or tuple(x.shape[1:]) != (channels, height, width):
            raise ValueError(
                f"The {what} tensor has shape {tuple(image.shape)}; the model takes (B, {channels}, {height}, "
                f"{width}) or one image ({channels}, {height}, {width})."
            )
        if not x.is_floating_point():
            raise ValueError(f"The {what} tensor must be float x_0 in [-1, 1] (k / 127.5 - 1), got {x.dtype}.")
        if not torch.isfinite(x).all() or x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6:
            raise ValueError(
                f"The {what} tensor must lie in [-1, 1] (x_0 = k / 127.5 - 1 for 8-bit pixels k), got values in "
                f"[{x.min().item():.3g}, {x.max().item():.3g}]."
            )
        return x.float()
    if not isinstance(image, Image.Image | list | tuple) or not all(
        isinstance(i, Image.Image) for i in _as_list(image)
    ):
        raise ValueError(f"The {what} must be a PIL image, a list of them, or a tensor, got {type(image).__name__}.")
    pixels = []
    for item in _as_list(image):
        _check_size(item, height, width, what)
        if channels == 1 and not is_grayscale(item):
            raise ValueError(
                f"The {what} has mode {item.mode!r}, colour, but the model is grayscale; convert it first "
                "(image.convert('L')): a silent conversion would change the pixels you keep."
            )
        array = np.array(convert_to_channels(item, channels), dtype=np.uint8)
        pixels.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(pixels)).float() / 127.5 - 1


def mask_to_tensor(mask: MaskInput, height: int, width: int) -> torch.Tensor:
    """The region to fill, a bool tensor (B, 1, height, width), True = fill, binarised at 0.5 as diffusers'
    inpainting pipelines read masks: white (>= 128 of 255) = fill, black = keep.

    Args:
        mask: a grayscale PIL image or a list of them, or a tensor in [0, 1] shaped (H, W), (1, H, W) or
            (B, 1, H, W).
    Raises:
        ValueError: one line, for a wrong size or mode, and for a mask with nothing to fill or nothing kept.
    """
    if isinstance(mask, torch.Tensor):
        m = mask.reshape(1, 1, *mask.shape) if mask.ndim == 2 else (mask[None] if mask.ndim == 3 else mask)
        if m.ndim != 4 or tuple(m.shape[1:]) != (1, height, width):
            raise ValueError(
                f"The mask tensor has shape {tuple(mask.shape)}; a mask is ({height}, {width}), (1, {height}, "
                f"{width}) or (B, 1, {height}, {width})."
            )
        if m.min() < 0 or m.max() > 1:
            raise ValueError(
                f"The mask tensor must lie in [0, 1] (1 = fill), got [{m.min().item()}, {m.max().item()}]."
            )
        fill = m.float() >= 0.5
    else:
        if not isinstance(mask, Image.Image | list | tuple) or not all(
            isinstance(i, Image.Image) for i in _as_list(mask)
        ):
            raise ValueError(f"The mask must be a PIL image, a list of them, or a tensor, got {type(mask).__name__}.")
        masks = []
        for item in _as_list(mask):
            _check_size(item, height, width, "mask")
            if not is_grayscale(item) or item.mode == "LA":
                raise ValueError(
                    f"The mask has mode {item.mode!r}; a mask is a grayscale image (mode 'L' or '1': white = fill, "
                    "black = keep)."
                )
            masks.append(np.array(convert_to_channels(item, 1), dtype=np.uint8) >= 128)
        fill = torch.from_numpy(np.stack(masks))[:, None]
    filled = fill.flatten(1).float().mean(1)
    if (filled == 0).any():
        raise ValueError("The mask has no white pixel: nothing to fill (white = fill, black = keep).")
    if (filled == 1).any():
        raise ValueError(
            "The mask is white everywhere: nothing is kept, so this is ordinary sampling; use the `sample` command or "
            "SimpleDDPMPipeline."
        )
    return fill


def image_format(unet: torch.nn.Module) -> tuple[int, int, int]:
    """(channels, height, width) of the images `unet` makes."""
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return unet.config.in_channels, height, width


def simple_ddpm_scheduler(pipe, task: str) -> SimpleDDPMScheduler:
    """The pipeline's scheduler, which the editing pipelines need to be a SimpleDDPMScheduler (its q(x_t | x_0),
    respaced chain and DDIM coefficients); one line otherwise."""
    if not isinstance(pipe.scheduler, SimpleDDPMScheduler):
        raise TypeError(
            f"{task} needs a SimpleDDPMScheduler and this pipeline has {type(pipe.scheduler).__name__}; set it back "
            "with pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config)."
        )
    return pipe.scheduler


def default_batch_size(batch_size: int | None, class_labels, *counts: int) -> int | None:
    """`batch_size`, else None when several class labels are given (one result per label), else the most images
    (or masks) given."""
    several = isinstance(class_labels, list | tuple) or (isinstance(class_labels, torch.Tensor) and class_labels.ndim)
    if batch_size is not None or several:
        return batch_size
    return max(counts)
