"""The negative ELBO of images under a pipeline's network, in bits per dimension, term by term (Ho et al. 2020
eq. 5), exactly or by a stratified estimate; `SimpleDDPMPipeline.elbo` documents the arguments."""

import copy
from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .ddpm_chain import table_dtype
from .scheduling_simple_ddpm import SimpleDDPMScheduler


@dataclass
class ELBOOutput(BaseOutput):
    """The negative variational bound of each image, in bits per dimension (Ho et al. 2020 eq. 5).

    Args:
        bits_per_dim (`torch.Tensor` of shape `(batch,)`): prior + denoising.sum(-1) + reconstruction.
        prior (`torch.Tensor` of shape `(batch,)`): L_T = KL(q(x_T | x_0) || N(0, I)).
        denoising (`torch.Tensor` of shape `(batch, T - 1)`): column t-2 holds
            L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t = 2..T. With `num_timesteps=K`, the
            K sampled columns hold their term times the size of its stratum, and the others 0. With
            `num_inference_steps=K`, shape `(batch, K - 1)`: the K-step chain's KL terms, t increasing.
        reconstruction (`torch.Tensor` of shape `(batch,)`): L_0 = -log p(x_0 | x_1).
    """

    bits_per_dim: torch.Tensor
    prior: torch.Tensor
    denoising: torch.Tensor
    reconstruction: torch.Tensor


def geometric_strata(num_terms: int, num_strata: int) -> list[tuple[int, int]]:
    """`num_strata` contiguous ranges [start, stop) that cover 0..num_terms-1, their sizes growing geometrically.

    Edge i is about num_terms^(i / num_strata) - 1, but every stratum holds at least one term, so the first
    strata hold one term each: e.g. 999 terms in 100 strata give 59 single terms, then strata of 2 up to 68.
    """
    edges = [0]
    for i in range(1, num_strata):
        target = round(num_terms ** (i / num_strata)) - 1
        edges.append(min(max(edges[-1] + 1, target), num_terms - (num_strata - i)))
    edges.append(num_terms)
    return list(zip(edges[:-1], edges[1:], strict=True))


def negative_elbo(
    pipe: DiffusionPipeline,
    images: torch.Tensor,
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    batch_size: int | None = None,
    num_timesteps: int | None = None,
    class_labels=None,
    num_inference_steps: int | None = None,
) -> ELBOOutput:
    """`SimpleDDPMPipeline.elbo(images, ...)` of `pipe`, a SimpleDDPMPipeline."""
    scheduler = pipe.scheduler
    if not isinstance(scheduler, SimpleDDPMScheduler):
        raise TypeError(
            f"elbo needs the DDPM posterior tables of a SimpleDDPMScheduler, and this pipeline samples with "
            f"{type(scheduler).__name__}; measure the pipeline as trained (SimpleDDPMPipeline.from_pretrained) "
            "or set pipe.scheduler back to its SimpleDDPMScheduler."
        )
    T = len(scheduler)
    if images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got shape {tuple(images.shape)}.")
    labels = pipe.class_label_tensor(class_labels, len(images))
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [-1, 1], got dtype {images.dtype}.")
    low, high = images.min().item(), images.max().item()
    if low < -1 - 1e-6 or high > 1 + 1e-6:
        raise ValueError(
            f"images must lie in [-1, 1] (x / 127.5 - 1 for 8-bit pixels x), got values in [{low:.3g}, {high:.3g}]."
        )
    levels = (images.double() + 1) * 127.5
    if (levels - levels.round()).abs().max().item() > 1e-3:
        raise ValueError(
            "images must lie on the 8-bit grid (k / 127.5 - 1 for integers k); the discretized decoder "
            "would give a wrong likelihood. Quantize with ((x + 1) * 127.5).round() / 127.5 - 1."
        )
    if isinstance(generator, list) and len(generator) != len(images):
        raise ValueError(f"Got {len(generator)} generators for {len(images)} images; pass one per image.")
    if num_timesteps is not None and not 1 <= num_timesteps <= T - 1:
        raise ValueError(f"num_timesteps must be in [1, {T - 1}], got {num_timesteps}.")
    if num_timesteps is not None and num_inference_steps is not None:
        raise ValueError(
            "Pass num_timesteps (an estimate of the T-step bound) or num_inference_steps (the exact bound of the "
            "K-step chain), not both."
        )
    if num_inference_steps is not None:
        scheduler = copy.deepcopy(scheduler)  # set_timesteps on a copy: the pipeline's schedule is left as it was
        scheduler.set_timesteps(num_inference_steps)
    pipe._check_channels()
    batch_size = batch_size or len(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")

    device = pipe._execution_device
    dtype = table_dtype(device)  # float64, or float32 on a device without it
    x0 = levels.round().div(127.5).sub(1).to(device=device, dtype=dtype)  # exactly on the grid
    B = len(x0)
    reconstruction = torch.zeros(B, dtype=dtype, device=device)
    scale = dict.fromkeys(range(T), 1.0)  # timestep -> weight of its term in the sum
    column = {step: step - 1 for step in range(1, T)}  # timestep -> its column of `denoising`; 0 is the decoder
    vb_terms_bpd, first_step = scheduler.vb_terms_bpd, T - 1
    if num_inference_steps is not None:
        chain = scheduler.timesteps.tolist()  # decreasing; the last step is the decoder
        scale = dict.fromkeys(chain, 1.0)
        column = {step: len(chain) - 2 - i for i, step in enumerate(chain[:-1])}
        vb_terms_bpd, first_step = scheduler.chain_vb_terms_bpd, chain[0]
    elif num_timesteps is not None and num_timesteps < T - 1:
        # The draw uses `generator` (the first, when a list) so the estimate is reproducible.
        first = generator[0] if isinstance(generator, list) else generator
        strata = geometric_strata(T - 1, num_timesteps)
        sizes = torch.tensor([stop - start for start, stop in strata], dtype=torch.float64)
        offsets = (torch.rand(len(strata), generator=first, dtype=torch.float64) * sizes).long()
        # denoising term i (0-based) is timestep i + 1
        scale = {0: 1.0} | {
            start + int(offset) + 1: float(size)
            for (start, _), offset, size in zip(strata, offsets, sizes, strict=True)
        }
    terms = sorted(scale, reverse=True)
    denoising = torch.zeros(B, len(column), dtype=dtype, device=device)

    images_per_call = min(B, batch_size)
    steps_per_call = max(1, batch_size // images_per_call)
    for start in range(0, B, images_per_call):
        rows = slice(start, start + images_per_call)
        gens = generator[rows] if isinstance(generator, list) else generator
        x0_rows = x0[rows]
        labels_rows = None if labels is None else labels[rows].to(device)
        for k in pipe.progress_bar(range(0, len(terms), steps_per_call)):
            ts = terms[k : k + steps_per_call]
            noise = torch.cat(
                [randn_tensor(x0_rows.shape, generator=gens, device=device, dtype=torch.float32) for _ in ts]
            ).to(dtype)
            t = torch.tensor(ts, device=device).repeat_interleave(len(x0_rows))
            x0_rep = x0_rows.repeat(len(ts), 1, 1, 1)
            x_t = scheduler.add_noise(x0_rep, noise, t)
            labels_rep = None if labels_rows is None else labels_rows.repeat(len(ts))
            model_output = pipe._predict(x_t.float(), t, labels_rep).to(dtype)
            bits = vb_terms_bpd(model_output, x0_rep, x_t, t).view(len(ts), -1)
            for j, step in enumerate(ts):
                if step in column:
                    denoising[rows, column[step]] = bits[j] * scale[step]
                else:
                    reconstruction[rows] = bits[j]

    prior = scheduler.prior_bpd(x0, first_step)
    bits_per_dim = prior + denoising.sum(-1) + reconstruction
    if not torch.isfinite(bits_per_dim).all():
        raise FloatingPointError("The bound is not finite: the model's output contains NaN or inf.")
    return ELBOOutput(bits_per_dim=bits_per_dim, prior=prior, denoising=denoising, reconstruction=reconstruction)
