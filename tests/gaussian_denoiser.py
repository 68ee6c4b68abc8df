"""A network that needs no training: the exact denoiser of Gaussian images x_0 ~ N(mean, cov), for pipelines."""

import math
from types import SimpleNamespace

import torch


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
