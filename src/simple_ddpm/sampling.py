"""Sampling many images from a pipeline: the choice of sampler, batches with one progress bar over all network
calls, and the trajectory x_t, x0_hat of a few samples. Shared by the `simple-ddpm` command, the Frechet distance
in training/train.py, and the benchmarks.
"""

from collections.abc import Callable

import torch
from diffusers import DPMSolverMultistepScheduler
from PIL import Image
from tqdm.auto import tqdm

from .image_processing import image_grid
from .pipeline_simple_ddpm import SimpleDDPMPipeline
from .scheduling_simple_ddpm import FIXED_VARIANCE_TYPES, LEARNED_VARIANCE_TYPES, SimpleDDPMScheduler

# name -> (what it is, the default eta of SimpleDDPMScheduler's step; None: the scheduler takes no eta)
SAMPLERS = {
    "ddpm": ("ancestral sampling, Ho et al. 2020 (eta = 1)", 1.0),
    "ddim": ("DDIM, Song et al. 2021 (eta = 0: deterministic)", 0.0),
    "dpm++": ("DPM-Solver++(2M), Lu et al. 2022, diffusers' DPMSolverMultistepScheduler", None),
}

# The reverse variances a fixed-variance model can sample with; a learned variance is the network's, not a choice.
SAMPLING_VARIANCE_TYPES = (*FIXED_VARIANCE_TYPES, "analytic")


def check_sampler_choice(
    sampler: str, eta: float | None = None, timestep_spacing: str | None = None, variance_type: str | None = None
) -> float | None:
    """The checks of `use_sampler` that need no model, so that a command can make them before it loads one; returns
    the eta to sample with (None for a scheduler that takes none)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; valid values are: {', '.join(SAMPLERS)}.")
    default_eta = SAMPLERS[sampler][1]
    if default_eta is None:
        for option, value in (
            ("--eta", eta),
            ("--timestep-spacing", timestep_spacing),
            ("--variance-type", variance_type),
        ):
            if value is not None:
                raise ValueError(f"{option} applies to the ddpm and ddim samplers, not to {sampler}.")
        return None
    if variance_type is not None and variance_type not in SAMPLING_VARIANCE_TYPES:
        raise ValueError(
            f"Unknown variance_type {variance_type!r}; valid values are: {', '.join(SAMPLING_VARIANCE_TYPES)}."
        )
    eta = default_eta if eta is None else eta
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1] (0: DDIM, 1: DDPM), got {eta}.")
    return eta


def use_sampler(
    pipe: SimpleDDPMPipeline,
    sampler: str,
    eta: float | None = None,
    timestep_spacing: str | None = None,
    variance_type: str | None = None,
) -> float | None:
    """Set `pipe.scheduler` for `sampler` (a key of `SAMPLERS`) from the pipeline's DDPM configuration, and return
    the eta to pass to the pipeline. "ddpm" and "ddim" are SimpleDDPMScheduler's step with eta 1 and 0 (or
    `eta`): both step to the next timestep of the respaced chain, whatever the spacing. `timestep_spacing` and
    `variance_type` (one of `SAMPLING_VARIANCE_TYPES`) replace the configuration's for this pipeline only (ddpm and
    ddim; "optimal" and "analytic" need the model's analytic table)."""
    eta = check_sampler_choice(sampler, eta, timestep_spacing, variance_type)
    if eta is None:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        return None
    if variance_type is not None and pipe.scheduler.config.get("variance_type") in LEARNED_VARIANCE_TYPES:
        raise ValueError(
            f"This model learns its reverse variance ({pipe.scheduler.config.variance_type!r}): its network gives it, "
            "so --variance-type does not apply."
        )
    changes = {"timestep_spacing": timestep_spacing, "variance_type": variance_type}
    changes = {key: value for key, value in changes.items() if value is not None}
    if not isinstance(pipe.scheduler, SimpleDDPMScheduler) or changes:
        pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, **changes)
    if timestep_spacing == "optimal" and pipe.scheduler.analytic_mean_squared_eps is None:
        raise ValueError(
            "--timestep-spacing optimal needs the model's analytic variance table: run `simple-ddpm analytic "
            "MODEL DATA` once."
        )
    variance_type = pipe.scheduler.config.variance_type
    if eta != 1 and variance_type not in ("fixed_small", "analytic"):
        raise ValueError(
            f"eta={eta} needs variance_type 'fixed_small' or 'analytic'; this model has {variance_type!r}: use ddpm."
        )
    return eta


def generate_images(
    pipe: SimpleDDPMPipeline,
    num_images: int,
    *,
    batch_size: int,
    seed: int = 0,
    num_inference_steps: int = 1000,
    eta: float | None = None,
    progress: bool = True,
    callback_on_step_end: Callable[[SimpleDDPMPipeline, int, int, dict], dict] | None = None,
    callback_on_step_end_tensor_inputs: list[str] | None = None,
    class_labels: list[int | str] | None = None,
    guidance_scale: float = 0.0,
    mixed_precision: str = "auto",
) -> torch.Tensor:
    """`num_images` samples (N, C, H, W) in [0, 1] on the CPU. Image i starts from the generator seeded with
    seed + i, so it does not depend on the batch size. One progress bar counts every step of every batch.
    A class-conditional pipeline takes `class_labels`, one per image, and `guidance_scale`; `mixed_precision` is
    the UNet's autocast (see the pipeline's `__call__`)."""
    if class_labels is not None and len(class_labels) != num_images:
        raise ValueError(f"Got {len(class_labels)} class labels for {num_images} images; pass one per image.")
    generators = [torch.Generator().manual_seed(seed + i) for i in range(num_images)]
    num_batches = -(-num_images // batch_size)
    bar = tqdm(total=num_batches * num_inference_steps, desc="sampling steps", disable=not progress, unit="step")

    def count_step(pipeline, step_index, timestep, callback_kwargs):
        bar.update(1)
        if callback_on_step_end is None:
            return {}
        return callback_on_step_end(pipeline, step_index, timestep, callback_kwargs)

    batches = []
    with bar:
        for start in range(0, num_images, batch_size):
            batch = generators[start : start + batch_size]
            bar.set_postfix_str(f"batch {start // batch_size + 1}/{num_batches}")
            images = pipe(
                batch_size=len(batch),
                generator=batch,
                num_inference_steps=num_inference_steps,
                eta=eta,
                output_type="pt",
                callback_on_step_end=count_step,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
                class_labels=None if class_labels is None else class_labels[start : start + batch_size],
                guidance_scale=guidance_scale,
                mixed_precision=mixed_precision,
            )[0]
            batches.append(images.cpu())
    return torch.cat(batches)


def evenly_spaced_steps(num_inference_steps: int, count: int) -> list[int]:
    """`count` step indices from the first to the last, evenly spaced (fewer when there are fewer steps)."""
    count = min(count, num_inference_steps)
    if count == 1:
        return [num_inference_steps - 1]
    return sorted({round(i * (num_inference_steps - 1) / (count - 1)) for i in range(count)})


class TrajectoryRecorder:
    """A `callback_on_step_end` that keeps x_t and x0_hat of the first `num_images` images of the first batch after
    the steps `step_indices` (0-based), for `grid`."""

    tensor_inputs = ["image", "pred_original_sample"]

    def __init__(self, num_images: int, step_indices: list[int]):
        self.num_images = num_images
        self.step_indices = sorted(step_indices)
        self.recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, pipeline: SimpleDDPMPipeline, step_index: int, timestep: int, callback_kwargs: dict) -> dict:
        if step_index in self.step_indices and step_index not in self.recorded:  # later batches pass by
            x0_hat = callback_kwargs["pred_original_sample"]
            if x0_hat is None:
                raise ValueError(f"{type(pipeline.scheduler).__name__} gives no x0_hat; use the ddpm or ddim sampler.")
            n = self.num_images
            self.recorded[step_index] = (callback_kwargs["image"][:n].cpu(), x0_hat[:n].cpu())
        return {}

    def grid(self) -> Image.Image:
        """For each image a row of x_t and below it a row of x0_hat, one column per step."""
        cells = []
        for i in range(min(self.num_images, len(self.recorded[self.step_indices[0]][0]))):
            for which in (0, 1):  # x_t, then x0_hat
                cells += [(self.recorded[s][which][i] / 2 + 0.5).clamp(0, 1) for s in self.step_indices]
        return image_grid(torch.stack(cells), cols=len(self.step_indices))
