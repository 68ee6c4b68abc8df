"""Classifier-free guidance of a class-conditional network's output (Ho & Salimans 2022)."""

import torch


def classifier_free_guidance(
    conditional: torch.Tensor, unconditional: torch.Tensor, guidance_scale: float, channels: int | None = None
) -> torch.Tensor:
    """eps~ = (1 + w) eps(x_t, y) - w eps(x_t, no label) (Ho & Salimans 2022 eq. 6); w = 0 is the conditional model.

    Applied to the network's output whatever `prediction_type`: x0_hat and v are affine in eps at a fixed x_t, and
    the weights (1 + w, -w) sum to 1, so guiding x0_hat or v is the same as guiding eps. With `channels` < the
    output's channels (a learned variance stacked after the prediction), only the first `channels` are guided and
    the rest is the conditional output's.
    """
    channels = conditional.shape[1] if channels is None else channels
    guided = torch.lerp(unconditional[:, :channels], conditional[:, :channels], 1 + guidance_scale)
    return torch.cat([guided, conditional[:, channels:]], dim=1) if channels < conditional.shape[1] else guided
