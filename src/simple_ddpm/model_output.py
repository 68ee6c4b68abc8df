"""What the network's output means: its channels (C, or 2C with a learned variance), the learned log-variance
(Nichol & Dhariwal 2021 eq. 15) and dynamic thresholding of x0_hat (Saharia et al. 2022, sec. 2.3)."""

import torch

from .ddpm_chain import LEARNED_VARIANCE_TYPES


def check_output_channels(variance_type: str, output_channels: int, sample_channels: int) -> None:
    """Raise a one-line ValueError unless a network with `output_channels` fits C = `sample_channels` images:
    2C channels for a learned variance, C for a fixed one."""
    learns_variance = variance_type in LEARNED_VARIANCE_TYPES
    expected = 2 * sample_channels if learns_variance else sample_channels
    if output_channels == expected:
        return
    if learns_variance:
        raise ValueError(
            f"variance_type={variance_type!r} needs a model output of {expected} channels (the prediction and "
            f"the variance, 2 x the sample's {sample_channels}), got {output_channels}; a model that outputs "
            f"{sample_channels} channels has a fixed variance: use variance_type 'fixed_small' or 'fixed_large'."
        )
    hint = (
        f"; a model that outputs its variance needs variance_type 'learned_range' or 'learned', not {variance_type!r}"
        if output_channels == 2 * sample_channels
        else ""
    )
    raise ValueError(
        f"variance_type={variance_type!r} needs a model output of {expected} channels, as many as the sample's, "
        f"got {output_channels}{hint}."
    )


def learned_log_variance(
    variance_type: str, variance_values: torch.Tensor, min_log: torch.Tensor | float, max_log: torch.Tensor | float
) -> torch.Tensor:
    """log Sigma_t from the network's v: v itself for "learned"; for "learned_range" (Nichol & Dhariwal 2021
    eq. 15) frac max_log + (1 - frac) min_log with frac = (v + 1) / 2, min_log = log sigma~^2_t (clipped) and
    max_log = log beta_t of the chain being sampled or bounded."""
    if variance_type == "learned":
        return variance_values
    frac = (variance_values + 1) / 2
    return frac * max_log + (1 - frac) * min_log


def dynamic_threshold(pred_original_sample: torch.Tensor, ratio: float, sample_max_value: float) -> torch.Tensor:
    """x0_hat <- clip(x0_hat, -s, s) / s per image, s = clamp(quantile_ratio(|x0_hat|), 1, sample_max_value)
    (Saharia et al. 2022, sec. 2.3). Half precision is computed in float32 (torch.quantile needs it)."""
    flat = pred_original_sample.flatten(1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    s = torch.quantile(flat.abs(), ratio, dim=1, keepdim=True)
    s = torch.clamp(s, min=1, max=sample_max_value)
    thresholded = torch.clamp(flat, -s, s) / s
    return thresholded.to(pred_original_sample.dtype).view_as(pred_original_sample)
