"""Networks that need no training, as modules a SimpleDDPMPipeline can call, for tests whose answer is known:

- `GaussianDenoiser`: the exact eps_hat of Gaussian images x_0 ~ N(mean, cov) with any covariance between pixels
  (inpainting, img2img and inversion have closed forms there), one timestep per call;
- `ExactDenoiser`: the exact denoiser of x_0 ~ N(0, s^2 I) in each prediction type, with per-image timesteps, where
  every quantity of the analytic variance is known in closed form, or of pixels uniform on {-0.5, 0.5}
  (tests/ideal_denoiser.py) for non-Gaussian data.
"""

import math
from types import SimpleNamespace

import numpy as np
import torch
from ideal_denoiser import ideal_denoiser


class GaussianDenoiser(torch.nn.Module):
    """Called as a UNet, `net(x_t, t).sample`, it outputs the exact eps_hat = E[eps | x_t] of x_0 ~ N(mean, cov),
    where x_0 is an image of `shape` (C, H, W) flattened to D = C H W pixels, cov a (D, D) matrix:
    E[x_0 | x_t] = mean + cov a (a^2 cov + (1 - a^2) I)^-1 (x_t - a mean), a = sqrt(alpha_bar_t), in float64."""

    def __init__(
        self, mean: torch.Tensor, cov: torch.Tensor, shape: tuple[int, int, int], alphas_cumprod: torch.Tensor
    ):
        super().__init__()
        channels, height, width = shape
        self.config = SimpleNamespace(sample_size=(height, width), in_channels=channels, out_channels=channels)
        self.mean, self.cov = mean.double(), cov.double()
        self.alphas_cumprod = alphas_cumprod.double()

    @property
    def device(self) -> torch.device:  # what diffusers' pipelines ask a component
        return torch.device("cpu")

    def posterior_mean(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """E[x_0 | x_t], x of shape (B, D), float64."""
        alpha_bar = self.alphas_cumprod[t].item()
        a = math.sqrt(alpha_bar)
        precision = a * a * self.cov + (1 - alpha_bar) * torch.eye(len(self.mean), dtype=torch.float64)
        gain = a * self.cov @ torch.linalg.inv(precision)  # symmetric matrices: row vectors multiply by gain.T
        return self.mean + (x - a * self.mean) @ gain.T

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels=None) -> SimpleNamespace:
        t = int(timestep.reshape(-1)[0])
        x = sample.double().flatten(1)
        alpha_bar = self.alphas_cumprod[t].item()
        eps = (x - math.sqrt(alpha_bar) * self.posterior_mean(x, t)) / math.sqrt(1 - alpha_bar)
        return SimpleNamespace(sample=eps.view_as(sample).to(sample.dtype))


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
