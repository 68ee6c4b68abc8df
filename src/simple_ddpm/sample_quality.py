"""The Frechet distance of a pipeline's samples to a reference set: one implementation for the `simple-ddpm fid`
command, training/train.py's --fid_every and the benchmarks."""

import numpy as np
import torch
from tqdm.auto import tqdm

from .feature_networks import FeatureNetworkError
from .frechet import FeatureStatistics
from .pipeline_simple_ddpm import SimpleDDPMPipeline
from .sampling import generate_images


def check_image_format(extractor, channels: int, size: int, what: str) -> None:
    """A classifier's features are defined for its own image format only; Inception takes any."""
    if extractor.image_size is not None and (channels, size) != (extractor.channels, extractor.image_size):
        raise FeatureNetworkError(
            f"The feature classifier takes {extractor.channels}-channel {extractor.image_size}x{extractor.image_size} "
            f"images; {what} has {channels}-channel {size}x{size} images."
        )


def pixel_statistics(
    extractor, pixels: torch.Tensor, *, batch_size: int, desc: str = "features", progress: bool = True
) -> FeatureStatistics:
    """Statistics of the features of uint8 pixels (N, C, H, W), computed `batch_size` images at a time."""
    starts = range(0, len(pixels), batch_size)
    rows = [extractor(pixels[i : i + batch_size]) for i in tqdm(starts, desc=desc, disable=not progress)]
    return FeatureStatistics.of(np.concatenate(rows), extractor.name)


def sample_statistics(
    pipe: SimpleDDPMPipeline,
    extractor,
    num_samples: int,
    *,
    batch_size: int,
    seed: int = 0,
    num_inference_steps: int = 1000,
    eta: float | None = None,
    progress: bool = True,
) -> FeatureStatistics:
    """Statistics of the features of `num_samples` samples (image i from seed + i), quantized to 8 bits as a
    saved PNG holds them."""
    samples = generate_images(
        pipe,
        num_samples,
        batch_size=batch_size,
        seed=seed,
        num_inference_steps=num_inference_steps,
        eta=eta,
        progress=progress,
    )
    pixels = (samples * 255).round().to(torch.uint8)
    return pixel_statistics(extractor, pixels, batch_size=batch_size, desc="sample features", progress=progress)
