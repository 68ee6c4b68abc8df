"""Networks that need no training, as modules a SimpleDDPMPipeline can call: the exact denoiser of Gaussian data
x_0 ~ N(0, s^2 I), where every quantity of the analytic variance is known in closed form, and the exact denoiser of
pixels uniform on {-0.5, 0.5} (tests/ideal_denoiser.py) for non-Gaussian data."""

from types import SimpleNamespace

import numpy as np
import torch
from ideal_denoiser import ideal_denoiser


def gaussian_predicted_x0(x: torch.Tensor, alpha_bar: torch.Tensor, s: float) -> torch.Tensor:
    """E[x_0 | x_t] = sqrt(alpha_bar) s^2 x_t / (alpha_bar s^2 + 1 - alpha_bar) for x_0 ~ N(0, s^2 I)."""
    return alpha_bar.sqrt() * s**2 * x / (alpha_bar * s**2 + 1 - alpha_bar)


def gaussian_mean_squared_eps(alphas_cumprod: torch.Tensor, s: float) -> torch.Tensor:
    """G_t = E||eps_hat||^2 / d = (1 - alpha_bar_t) / (alpha_bar_t s^2 + 1 - alpha_bar_t): eps_hat = x_t sqrt(1 -
    alpha_bar) / v with x_t ~ N(0, v), v = alpha_bar s^2 + 1 - alpha_bar."""
    return (1 - alphas_cumprod) / (alphas_cumprod * s**2 + 1 - alphas_cumprod)


class ExactDenoiser(torch.nn.Module):
    """`unet(x_t, t).sample` of the exact denoiser, as a pipeline calls it; `s` is the Gaussian data's std, or
    None for pixels uniform on {-0.5, 0.5}. Timesteps may differ per image."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str, s: float | None, size: int = 4):
        super().__init__()
        self.alphas_cumprod, self.prediction_type, self.s = alphas_cumprod, prediction_type, s
        self.config = SimpleNamespace(sample_size=size, in_channels=1, out_channels=1)
        self.dtype_anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float32), requires_grad=False)

    @property
    def device(self) -> torch.device:
        return self.dtype_anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.dtype_anchor.dtype

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> SimpleNamespace:
        t = torch.as_tensor(timestep).long().reshape(-1).expand(len(x))
        x = x.double()
        if self.s is None:
            output = torch.empty_like(x)
            for step in t.unique().tolist():
                rows = t == step
                output[rows] = ideal_denoiser(x[rows], step, self.alphas_cumprod, self.prediction_type)
            return SimpleNamespace(sample=output.float())
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x0 = gaussian_predicted_x0(x, alpha_bar, self.s)
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        outputs = {"epsilon": eps, "sample": x0, "v_prediction": alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0}
        return SimpleNamespace(sample=outputs[self.prediction_type].float())


def two_point_mean_squared_eps(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """G_t of pixels uniform on {-0.5, 0.5} under their exact denoiser, by Gauss-Hermite quadrature over the noise
    (by symmetry x_0 = 0.5): 100 nodes integrate the smooth eps_hat^2 to float64 precision."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(100)  # for the weight exp(-z^2 / 2)
    weights = torch.from_numpy(weights / weights.sum())
    alpha_bar = alphas_cumprod[:, None]
    x = alpha_bar.sqrt() * 0.5 + (1 - alpha_bar).sqrt() * torch.from_numpy(nodes)[None, :]
    x0 = 0.5 * torch.tanh(0.5 * alpha_bar.sqrt() * x / (1 - alpha_bar))  # as tests/ideal_denoiser.py
    eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
    return (eps**2 * weights).sum(1)
