"""A network that needs no training: the exact E[x_0 | x_t] for pixels uniform on {-0.5, 0.5}."""

import math

import torch


def ideal_denoiser(x: torch.Tensor, t: int, alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The exact denoiser's output at (x_t, t) in the given parametrization ("epsilon", "sample", "v_prediction")."""
    alpha_bar = alphas_cumprod[int(t)].item()
    x0 = 0.5 * torch.tanh(0.5 * math.sqrt(alpha_bar) * x / (1 - alpha_bar))
    eps = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
    outputs = {
        "epsilon": eps,
        "sample": x0,
        "v_prediction": math.sqrt(alpha_bar) * eps - math.sqrt(1 - alpha_bar) * x0,
    }
    return outputs[prediction_type]
