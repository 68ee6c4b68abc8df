"""Analytic-DPM (Bao et al. 2022): the KL-optimal reverse variance and the timesteps of least bound, as pure
functions of alpha_bar and G_t = E_q ||eps_theta(x_t, t)||^2 / d. The derivations are in docs/mathematics.md
("Analytic-DPM")."""

import math

import numpy as np
import torch

# E|N(0, sigma^2)| = sigma sqrt(2 / pi): the largest std whose noise moves a pixel by y bins of 2/255 on average.
PIXEL_BIN = 2 / 255


def analytic_variance(
    alpha_bar_t: torch.Tensor, alpha_bar_s: torch.Tensor, lambda2: torch.Tensor, mean_squared_eps: torch.Tensor
) -> torch.Tensor:
    """sigma*^2_{s|t} = lambda^2 + (sqrt((1 - alpha_bar_t) / alpha_{t|s}) - sqrt(1 - alpha_bar_s - lambda^2))^2
    min(max(1 - G_t, 0), SNR_t), the KL-optimal variance of p(x_s | x_t), s < t (Bao et al. 2022, eq. 9 with the
    bounds of eq. 11-12); alpha_{t|s} = alpha_bar_t / alpha_bar_s, lambda^2 the step's noise, G_t =
    `mean_squared_eps`. Broadcasting, float64. Derivation and the clipping: docs/mathematics.md."""
    alpha_ts = alpha_bar_t / alpha_bar_s
    gap = ((1 - alpha_bar_t) / alpha_ts).sqrt() - (1 - alpha_bar_s - lambda2).clamp(min=0).sqrt()
    snr = alpha_bar_t / (1 - alpha_bar_t)
    return lambda2 + gap**2 * torch.minimum((1 - mean_squared_eps).clamp(min=0), snr)


def check_mean_squared_eps(
    values: list[float] | None, num_train_timesteps: int, variance_type: str
) -> np.ndarray | None:
    """The table G_t of a scheduler's config as float64, validated: T finite numbers, required by "analytic"."""
    if values is None:
        if variance_type == "analytic":
            raise ValueError(
                "variance_type='analytic' needs analytic_mean_squared_eps, the model's mean squared predicted noise "
                "per timestep: estimate it with pipe.estimate_analytic_variance(images) or `simple-ddpm analytic "
                "MODEL DATA`."
            )
        return None
    mean_squared_eps = np.asarray(values, dtype=np.float64)
    if mean_squared_eps.shape != (num_train_timesteps,) or not np.all(np.isfinite(mean_squared_eps)):
        raise ValueError(
            f"analytic_mean_squared_eps must be num_train_timesteps={num_train_timesteps} finite numbers, "
            f"one per timestep, got shape {mean_squared_eps.shape}."
        )
    return mean_squared_eps


def clip_analytic_std(std: float, clip_pixels: float | None) -> float:
    """The second-to-last step's std, at most y (2/255) sqrt(pi/2), so that E|std z| <= y 2/255 (Bao et al. 2022,
    App. F.2; y = `clip_pixels`, None: unbounded)."""
    return std if clip_pixels is None else min(std, clip_pixels * PIXEL_BIN * math.sqrt(math.pi / 2))


def step_costs(alphas_cumprod: torch.Tensor, mean_squared_eps: torch.Tensor, variance_type: str) -> np.ndarray:
    """J[s, t] for every pair of timestep indices s < t: 2 / d times the expected KL term of a DDPM step t -> s
    under `variance_type` (Bao et al. 2022, eq. 14; docs/mathematics.md), +inf where s >= t. T x T, float64."""
    T = len(alphas_cumprod)
    alpha_bar = alphas_cumprod
    alpha_bar_s, alpha_bar_t = alpha_bar[:, None], alpha_bar[None, :]
    below = torch.ones(T, T, dtype=torch.bool).triu(1)  # s < t
    alpha_bar_s = torch.where(below, alpha_bar_s, 0.5)  # placeholders where s >= t, masked below
    alpha_bar_t = torch.where(below, alpha_bar_t, 0.25)
    beta = 1 - alpha_bar_t / alpha_bar_s  # beta_{t|s}
    lambda2 = (1 - alpha_bar_s) / (1 - alpha_bar_t) * beta  # beta~_{s|t}
    optimal = analytic_variance(alpha_bar_t, alpha_bar_s, lambda2, mean_squared_eps[None, :])
    if variance_type == "analytic":
        cost = torch.log(optimal / lambda2)
    else:
        variance = beta if variance_type == "fixed_large" else lambda2
        cost = torch.log(variance / lambda2) - 1 + optimal / variance
        # The decoder's variance is beta~ of the step into tau_1 = 0, so the edge t -> 0 also carries the
        # decoder's expected cost, log sigma^2 + E err^2 / sigma^2 + const, with E err^2 / d = sigma*^2 of the
        # step to the data (lambda^2 = 0 there).
        one = torch.ones((), dtype=torch.float64)
        decoder_error = analytic_variance(alpha_bar[0], one, 0 * one, mean_squared_eps[0])
        cost[0] = cost[0] + torch.log(lambda2[0]) + decoder_error / lambda2[0]
    return torch.where(below, cost, torch.inf).numpy()


def optimal_timestep_path(cost: np.ndarray, num_steps: int) -> list[int]:
    """The `num_steps` timesteps T-1 = tau_K > ... > tau_1 = 0 that minimise sum_k cost[tau_{k-1}, tau_k], by
    dynamic programming in O(K T^2) (Bao et al. 2022, eq. 14 and App. D). `cost` is T x T, +inf where s >= t."""
    T = len(cost)
    if num_steps == 1:
        return [T - 1]
    best = np.full(T, np.inf)  # best[t]: the least cost of a path of k edges from t down to 0
    best[0] = 0.0
    choices = []
    for _ in range(num_steps - 1):
        totals = best[:, None] + cost  # [s, t]
        choice = totals.argmin(0)
        best = totals[choice, np.arange(T)]
        choices.append(choice)
    path = [T - 1]
    for choice in reversed(choices):
        path.append(int(choice[path[-1]]))
    return path
