"""The DDPM noise schedule, reverse step and variational bound (Ho et al. 2020; Luo 2022).

Notation. The paper counts t = 1..T; diffusers' tables and a UNet's timestep input count t = 0..T-1. Here
index ``t`` of every table is the paper's step ``t + 1``: ``alphas_cumprod[t]`` is alpha_bar_{t+1}, and the
"previous" step of index 0 is the data itself (alpha_bar_0 = 1). Docstrings use the paper's symbols.

Two designs of the network (Luo 2022, sec. 2.1):
- Design I, ``prediction_type="sample"``: the network predicts x_0 and the reverse mean is mu_q(x_t, x0_hat).
- Design II, ``prediction_type="epsilon"``: the network predicts the noise eps and
  mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t)  (Ho et al. eq. 11).
- ``"v_prediction"`` (Salimans & Ho 2022): v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0.

Two options of diffusers' DDPMScheduler, with the same config keys:
- ``thresholding``: dynamic thresholding of x0_hat (Saharia et al. 2022, sec. 2.3), in `step` and in the bound.
- ``rescale_betas_zero_snr``: betas rescaled to zero terminal SNR, alpha_bar_T = 0 (Lin et al. 2023, Algorithm 1).

Learned variance (Nichol & Dhariwal 2021, sec. 3.1), ``variance_type="learned_range"`` or ``"learned"``: the network
outputs 2C channels for a C-channel image, the first C the prediction above and the last C a value v per pixel.
For "learned_range", log Sigma_t = frac log beta_t + (1 - frac) log sigma~^2_t with frac = (v + 1) / 2 (their
eq. 15; sigma~^2_t is the posterior variance, clipped at t = 1 as for "fixed_small"); for "learned", log Sigma_t = v.

Analytic variance (Bao et al. 2022, Analytic-DPM), ``variance_type="analytic"``: the KL-optimal reverse variance
sigma*^2 of every step, in closed form from one number per timestep, G_t = E_q ||eps_theta(x_t, t)||^2 / d (the
config's ``analytic_mean_squared_eps``, estimated once from the trained model, see
`SimpleDDPMPipeline.estimate_analytic_variance`); `analytic_variance` writes their eq. 9 with the bounds of
eq. 11-12. ``timestep_spacing="optimal"`` picks the K steps that minimise the K-step bound (their eq. 14,
`optimal_timesteps`).

All tables are float64, built once; ``step`` combines Python-float coefficients precomputed by
``set_timesteps`` (for the full T-step chain until it is called, as in diffusers), and ``add_noise`` gathers from
tables cached per device and dtype.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine", "sigmoid")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
FIXED_VARIANCE_TYPES = ("fixed_small", "fixed_large")
LEARNED_VARIANCE_TYPES = ("learned_range", "learned")
VARIANCE_TYPES = FIXED_VARIANCE_TYPES + LEARNED_VARIANCE_TYPES + ("analytic",)
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing", "optimal")
# E|N(0, sigma^2)| = sigma sqrt(2 / pi): the largest std whose noise moves a pixel by y bins of 2/255 on average.
PIXEL_BIN = 2 / 255
LOSS_WEIGHTINGS = ("simple", "elbo", "min_snr")
# DDPMScheduler's private helpers, which are not part of its API, and what serves their purpose here.
DIFFUSERS_PRIVATE_HELPERS = {
    "_get_variance": "`p_mean_variance` (the model's log-variance) or the `posterior_variance` table",
    "_threshold_sample": "`dynamic_threshold`",
}


@dataclass
class SimpleDDPMSchedulerOutput(BaseOutput):
    """Output of `SimpleDDPMScheduler.step`.

    Args:
        prev_sample (`torch.Tensor`): x_{t-1}, a draw from p(x_{t-1} | x_t); the next model input.
        pred_original_sample (`torch.Tensor`): x0_hat, the model's estimate of x_0 (after clipping).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def _choose(name: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; valid values are: {', '.join(map(repr, valid))}.")
    return value


def cosine_alphas_cumprod(num_train_timesteps: int, s: float = 0.008) -> np.ndarray:
    """alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2) (Nichol & Dhariwal 2021 eq. 17)."""
    t = np.arange(num_train_timesteps + 1, dtype=np.float64) / num_train_timesteps
    f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return f / f[0]


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """beta_1..beta_T of a named schedule, in float64, computed as diffusers' DDPMScheduler does."""
    if beta_schedule == "linear":  # Ho et al. 2020, sec. 4: 1e-4 .. 0.02 over T = 1000
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    if beta_schedule == "scaled_linear":  # latent diffusion: linear in sqrt(beta)
        return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":  # beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, capped at 0.999
        alpha_bar = cosine_alphas_cumprod(num_train_timesteps)
        return np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
    if beta_schedule == "sigmoid":  # GeoDiff (Xu et al. 2022)
        x = np.linspace(-6, 6, num_train_timesteps, dtype=np.float64)
        return 1 / (1 + np.exp(-x)) * (beta_end - beta_start) + beta_start
    raise AssertionError(beta_schedule)  # validated in __init__


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Betas whose alpha_bar_T is 0 (Lin et al. 2023, Algorithm 1), in float64.

    sqrt(alpha_bar_t) is shifted so that its last value is 0 and scaled so that its first value is unchanged:
    sqrt(alpha_bar'_t) = (sqrt(alpha_bar_t) - sqrt(alpha_bar_T)) sqrt(alpha_bar_1) / (sqrt(alpha_bar_1) -
    sqrt(alpha_bar_T)); then beta'_t = 1 - alpha_bar'_t / alpha_bar'_{t-1}, so beta'_1 = beta_1 and beta'_T = 1.
    """
    sqrt_alpha_bar = np.sqrt(np.cumprod(1 - betas))
    first, last = sqrt_alpha_bar[0], sqrt_alpha_bar[-1]
    alpha_bar = ((sqrt_alpha_bar - last) * (first / (first - last))) ** 2
    return 1 - np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])


def analytic_variance(
    alpha_bar_t: torch.Tensor, alpha_bar_s: torch.Tensor, lambda2: torch.Tensor, mean_squared_eps: torch.Tensor
) -> torch.Tensor:
    """sigma*^2_{s|t}, the KL-optimal variance of p(x_s | x_t) for a step t -> s < t (Bao et al. 2022, eq. 9, 11, 12).

    sigma*^2 = lambda^2 + (sqrt((1 - alpha_bar_t) / alpha_{t|s}) - sqrt(1 - alpha_bar_s - lambda^2))^2 (1 - G_t),
    alpha_{t|s} = alpha_bar_t / alpha_bar_s, lambda^2 the step's noise (eta^2 beta~_{s|t}: DDPM at eta = 1, DDIM at
    0), G_t = `mean_squared_eps`. The factor 1 - G_t is clipped to [0, SNR_t], SNR_t = alpha_bar_t / (1 -
    alpha_bar_t), as the reference code clips (1 - G_t) / SNR_t to [0, 1]: 0 is eq. 11's lower bound
    sigma*^2 >= lambda^2, SNR_t is eq. 12's upper bound for data in [-1, 1] (whose squared factor is SNR_t times
    the one above). Eq. 11's upper bound, 1 - G_t <= 1, holds by itself for a mean square G_t >= 0; a table from
    `estimator="prediction_error"` may go below 0 where the network's error exceeds the noise, and then the
    variance the network's mean needs is larger than eq. 11's bound for an exact network. Broadcasting float64.
    """
    alpha_ts = alpha_bar_t / alpha_bar_s
    gap = ((1 - alpha_bar_t) / alpha_ts).sqrt() - (1 - alpha_bar_s - lambda2).clamp(min=0).sqrt()
    snr = alpha_bar_t / (1 - alpha_bar_t)
    return lambda2 + gap**2 * torch.minimum((1 - mean_squared_eps).clamp(min=0), snr)


def optimal_timestep_path(cost: np.ndarray, num_steps: int) -> list[int]:
    """The `num_steps` timesteps T-1 = tau_K > ... > tau_1 = 0 that minimise sum_k cost[tau_{k-1}, tau_k].

    Dynamic programming (Bao et al. 2022, eq. 14 and App. D): best[k, t], the least cost of a path of k edges from
    t down to 0, is min_{s < t} best[k-1, s] + cost[s, t]; O(K T^2) time, no network calls. `cost` is T x T with
    +inf where s >= t. K = 1 is the single step T-1.
    """
    T = len(cost)
    if num_steps == 1:
        return [T - 1]
    best = np.full(T, np.inf)
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


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (logvar2 - logvar1 - 1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, bin_width: float = 2 / 255
) -> torch.Tensor:
    """log P(x) per element for N(mean, e^{2 log_scale}) integrated over x's bin on the 8-bit grid in [-1, 1].

    Ho et al. 2020 eq. 13: the bins have width 2/255; the bins of -1 and 1 extend to -inf and +inf. The normal
    CDF is exact (``torch.special``), differences of CDFs are taken in the tail where they do not cancel.
    """
    inv_std = torch.exp(-log_scale)
    upper = inv_std * (x - mean + bin_width / 2)
    lower = inv_std * (x - mean - bin_width / 2)
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(X <= x + w/2), the bin of -1
    log_sf_lower = torch.special.log_ndtr(-lower)  # log P(X > x - w/2), the bin of +1
    # P(lower < Z <= upper): subtract in the lower tail when both ends are positive, to avoid 1 - 1.
    mass = torch.where(
        lower > 0,
        torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
        torch.special.ndtr(upper) - torch.special.ndtr(lower),
    )
    log_mass = torch.log(mass.clamp(min=torch.finfo(mass.dtype).tiny))
    edge = 1 - bin_width / 4
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_sf_lower, log_mass))


def _mean_over_pixels(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def _term_bits(
    original_samples: torch.Tensor,
    true_mean: torch.Tensor,
    true_log_variance: torch.Tensor,
    mean: torch.Tensor,
    log_variance: torch.Tensor,
    is_decoder: torch.Tensor,
) -> torch.Tensor:
    """A term of the bound per image in bits/dim: KL(q || p) of the two Gaussians, or where `is_decoder`,
    -log p(x_0 | x_1) under the discretized decoder N(mean, e^log_variance) (Ho et al. eq. 5 and 13)."""
    kl = _mean_over_pixels(normal_kl(true_mean, true_log_variance, mean, log_variance))
    nll = -_mean_over_pixels(discretized_gaussian_log_likelihood(original_samples, mean, 0.5 * log_variance))
    return torch.where(is_decoder, nll, kl) / math.log(2)


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


class SimpleDDPMScheduler(SchedulerMixin, ConfigMixin):
    """DDPM (Ho et al. 2020) with exact respacing, both designs of the network, training-loss weights and the ELBO.

    The configuration uses diffusers' key names, so ``SimpleDDPMScheduler.from_config(DDPMScheduler().config)``
    and ``DDPMScheduler.from_config(SimpleDDPMScheduler().config)`` both work.

    Args:
        num_train_timesteps (`int`, defaults to 1000): T, the number of forward steps.
        beta_start (`float`, defaults to 1e-4): beta_1 of the "linear", "scaled_linear" and "sigmoid" schedules.
        beta_end (`float`, defaults to 0.02): beta_T of those schedules.
        beta_schedule (`str`, defaults to "linear"): one of "linear", "scaled_linear", "squaredcos_cap_v2"
            (Nichol & Dhariwal's cosine schedule, also accepted as "cosine"), "sigmoid".
        trained_betas (`list[float]`, *optional*): explicit betas; overrides `beta_schedule`.
        variance_type (`str`, defaults to "fixed_small"): variance of p(x_{t-1} | x_t): "fixed_small" is the
            posterior variance sigma^2(t) = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t, "fixed_large" is beta_t;
            "learned_range" and "learned" read it from the last C of the network's 2C output channels (Nichol &
            Dhariwal 2021; see the module docstring). diffusers' DDPMScheduler samples "learned_range" as we do;
            its "learned" reads v as the variance itself, ours (and improved-diffusion's) as its log.
        clip_sample (`bool`, defaults to True): clip x0_hat to [-clip_sample_range, clip_sample_range].
        prediction_type (`str`, defaults to "epsilon"): "epsilon" (Design II), "sample" (Design I), "v_prediction".
        clip_sample_range (`float`, defaults to 1.0): the clipping bound.
        timestep_spacing (`str`, defaults to "linspace"): how `set_timesteps(n)` picks n of the T steps:
            "linspace" rounds n evenly spaced points of [0, T-1] (Nichol & Dhariwal's respacing; always includes
            the first and last step), "leading" takes 0, T//n, 2T//n, ... (+ steps_offset), "trailing" takes
            T-1, T-1-T/n, ... (rounded), "optimal" the n steps of least bound (`optimal_timesteps`; needs
            `analytic_mean_squared_eps`). At n = T all are every step.
        steps_offset (`int`, defaults to 0): offset added to "leading" timesteps, as in diffusers.
        thresholding (`bool`, defaults to False): dynamic thresholding of x0_hat instead of clipping (Saharia et
            al. 2022): per image, s = the `dynamic_thresholding_ratio` quantile of |x0_hat|, kept in
            [1, `sample_max_value`] (torch.clamp's order: s = `sample_max_value` when that is below 1), and
            x0_hat <- clip(x0_hat, -s, s) / s. Applied in `step` and in the bound (`p_mean_variance`).
        dynamic_thresholding_ratio (`float`, defaults to 0.995): the quantile, in [0, 1].
        sample_max_value (`float`, defaults to 1.0): the largest s, positive.
        rescale_betas_zero_snr (`bool`, defaults to False): rescale the betas to zero terminal SNR (Lin et al.
            2023, Algorithm 1): alpha_bar_T = 0, so x_T is pure noise. The bound is then undefined for
            `prediction_type="epsilon"` (x0_hat divides by sqrt(alpha_bar_T) = 0); use "v_prediction" as Lin et al.
        analytic_mean_squared_eps (`list[float]`, *optional*): G_t = E_q ||eps_theta(x_t, t)||^2 / d for t = 1..T,
            the trained model's mean squared predicted noise over data and noise (Bao et al. 2022), or its
            estimate 1 - E||eps - eps_theta||^2 / d (which may be negative); T numbers in float64, saved in
            scheduler_config.json. Needed by `variance_type="analytic"` and by
            `timestep_spacing="optimal"`; estimated by `SimpleDDPMPipeline.estimate_analytic_variance`.
        analytic_clip_pixels (`float`, *optional*, defaults to 2.0): y of Bao et al. App. F.2: when sampling with
            `variance_type="analytic"`, the std of the second-to-last step is at most y (2/255) sqrt(pi/2), so its
            noise moves a pixel by at most y bins on average. None: no such bound. The bound never uses it.
        distilled_timesteps (`list[int]`, *optional*): set on a student of progressive distillation (Salimans & Ho
            2022; training/distill.py): the decreasing timesteps, in [0, T-1], it was trained to sample in one
            deterministic DDIM step each. `SimpleDDPMPipeline` then samples them by default, at eta = 0
            (`simple_ddpm.distillation.distilled_sampling`).

    `variance_type="analytic"` is the KL-optimal variance sigma*^2 of every step of the chain being sampled (any
    `eta`), from `analytic_mean_squared_eps` (see `analytic_variance`); the last step outputs its mean.
    """

    _compatibles = ["DDPMScheduler"] + [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        rescale_betas_zero_snr: bool = False,
        analytic_mean_squared_eps: list[float] | None = None,
        analytic_clip_pixels: float | None = 2.0,
        distilled_timesteps: list[int] | None = None,
    ):
        _choose("beta_schedule", beta_schedule, BETA_SCHEDULES)
        _choose("prediction_type", prediction_type, PREDICTION_TYPES)
        _choose("variance_type", variance_type, VARIANCE_TYPES)
        _choose("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        if beta_schedule == "cosine":  # store diffusers' name so DDPMScheduler can read our config
            beta_schedule = "squaredcos_cap_v2"
            self.register_to_config(beta_schedule=beta_schedule)
        if thresholding and not 0 <= dynamic_thresholding_ratio <= 1:
            raise ValueError(f"dynamic_thresholding_ratio must lie in [0, 1], got {dynamic_thresholding_ratio}.")
        if thresholding and not sample_max_value > 0:
            raise ValueError(f"sample_max_value must be positive, got {sample_max_value}.")
        if clip_sample_range <= 0:
            raise ValueError(f"clip_sample_range must be positive, got {clip_sample_range}.")

        if num_train_timesteps < 2:
            raise ValueError(
                f"num_train_timesteps must be at least 2, got {num_train_timesteps}: the decoder's variance at t = 1 "
                "is sigma^2(2), which needs a second step."
            )
        if trained_betas is not None:
            betas = np.asarray(trained_betas, dtype=np.float64)
            if betas.ndim != 1 or len(betas) != num_train_timesteps:
                raise ValueError(
                    f"trained_betas must be a list of num_train_timesteps={num_train_timesteps} numbers, one beta "
                    f"per forward step, got shape {betas.shape}."
                )
        else:
            if beta_schedule != "squaredcos_cap_v2" and not beta_start < beta_end:
                raise ValueError(f"beta_end ({beta_end}) must be greater than beta_start ({beta_start}).")
            betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
        if not np.all((betas > 0) & (betas < 1)):
            bad = betas[~((betas > 0) & (betas < 1))]
            raise ValueError(
                "Every beta must lie in (0, 1): beta_t is the variance added at step t and sqrt(1 - beta_t) the "
                f"scale of x_{{t-1}}; got {bad[:5].tolist()}."
            )
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)  # beta_T = 1: alpha_bar_T = 0
        if analytic_mean_squared_eps is not None:
            mean_squared_eps = np.asarray(analytic_mean_squared_eps, dtype=np.float64)
            if mean_squared_eps.shape != (num_train_timesteps,) or not np.all(np.isfinite(mean_squared_eps)):
                raise ValueError(
                    f"analytic_mean_squared_eps must be num_train_timesteps={num_train_timesteps} finite numbers, "
                    f"one per timestep, got shape {mean_squared_eps.shape}."
                )
        elif variance_type == "analytic":
            raise ValueError(
                "variance_type='analytic' needs analytic_mean_squared_eps, the model's mean squared predicted noise "
                "per timestep: estimate it with pipe.estimate_analytic_variance(images) or `simple-ddpm analytic "
                "MODEL DATA`."
            )
        if distilled_timesteps is not None:
            chain = np.asarray(distilled_timesteps)
            if chain.ndim != 1 or len(chain) == 0 or chain.dtype.kind not in "iu" or np.any(np.diff(chain) >= 0):
                raise ValueError(f"distilled_timesteps must be a strictly decreasing list of integers, got {chain}.")
            if chain[0] >= num_train_timesteps or chain[-1] < 0:
                raise ValueError(f"distilled_timesteps must lie in [0, {num_train_timesteps - 1}], got {chain}.")
        if analytic_clip_pixels is not None and not analytic_clip_pixels > 0:
            raise ValueError(f"analytic_clip_pixels must be positive (or None: no bound), got {analytic_clip_pixels}.")

        # Float64 tables over t = 1..T (index t-1). Names as in diffusers and improved-diffusion.
        self.betas = torch.from_numpy(betas)  # beta_t
        self.alphas = 1.0 - self.betas  # alpha_t = 1 - beta_t
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)  # alpha_bar_t = prod_{s<=t} alpha_s
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, sigma^2(t))  (Ho et al. eq. 6-7)
        self.posterior_variance = self.betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        self.posterior_mean_coef1 = self.betas * self.alphas_cumprod_prev.sqrt() / (1 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1 - self.alphas_cumprod)
        # sigma^2(1) = 0: its log is replaced by log sigma^2(2), as improved-diffusion does.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        # G_t = E ||eps_theta(x_t, t)||^2 / d (Bao et al. 2022), or None
        self.analytic_mean_squared_eps = (
            None if analytic_mean_squared_eps is None else torch.from_numpy(mean_squared_eps)
        )
        # log-variance of p(x_{t-1} | x_t); at t = 1 both fixed types use sigma^2(2) (improved-diffusion's
        # convention), the analytic one its own sigma*^2 of the step to the data (lambda^2 = 0 there).
        if variance_type == "analytic":
            self.model_log_variance = torch.log(
                analytic_variance(
                    self.alphas_cumprod,
                    self.alphas_cumprod_prev,
                    self.posterior_variance,
                    self.analytic_mean_squared_eps,
                ).clamp(min=torch.finfo(torch.float64).tiny)
            )
        elif variance_type == "fixed_large":
            self.model_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], self.betas[1:]]))
        else:  # for the learned types, the variance that the training-loss weights assume (see loss_weights)
            self.model_log_variance = self.posterior_log_variance_clipped
        # The ends of "learned_range"'s interpolation: log sigma^2(t) clipped (above) and log beta_t.
        self.log_betas = torch.log(self.betas)

        self.init_noise_sigma = 1.0
        self._device_tables: dict[tuple, dict[str, torch.Tensor]] = {}
        # Until `set_timesteps` is called, `step` walks the full chain T-1, ..., 0, as DDPMScheduler does.
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)
        self._set_step_coefficients(self.timesteps.numpy())

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def __getattr__(self, name: str):
        if name in DIFFUSERS_PRIVATE_HELPERS:
            raise AttributeError(
                f"SimpleDDPMScheduler has no {name}, a private helper of diffusers' DDPMScheduler outside its API; "
                f"use {DIFFUSERS_PRIVATE_HELPERS[name]}."
            )
        return super().__getattr__(name)

    # ----------------------------------------------------------------------------------------------------------
    # The network's output: the prediction, and with a learned variance the variance's value v.

    @property
    def learns_variance(self) -> bool:
        """Whether the network outputs the reverse variance (2C channels) rather than C channels."""
        return self.config.variance_type in LEARNED_VARIANCE_TYPES

    def check_output_channels(self, output_channels: int, sample_channels: int) -> None:
        """Raise a one-line ValueError unless a network with `output_channels` fits C = `sample_channels` images:
        2C channels for a learned variance, C for a fixed one."""
        variance_type = self.config.variance_type
        expected = 2 * sample_channels if self.learns_variance else sample_channels
        if output_channels == expected:
            return
        if self.learns_variance:
            raise ValueError(
                f"variance_type={variance_type!r} needs a model output of {expected} channels (the prediction and "
                f"the variance, 2 x the sample's {sample_channels}), got {output_channels}; a model that outputs "
                f"{sample_channels} channels has a fixed variance: use variance_type 'fixed_small' or 'fixed_large'."
            )
        hint = (
            f"; a model that outputs its variance needs variance_type 'learned_range' or 'learned', not "
            f"{variance_type!r}"
            if output_channels == 2 * sample_channels
            else ""
        )
        raise ValueError(
            f"variance_type={variance_type!r} needs a model output of {expected} channels, as many as the sample's, "
            f"got {output_channels}{hint}."
        )

    def split_model_output(
        self, model_output: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prediction (first C channels) and, with a learned variance, v (last C channels; else None)."""
        if model_output.ndim < 2 or model_output.shape[2:] != sample.shape[2:] or len(model_output) != len(sample):
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but sample has shape {tuple(sample.shape)}; "
                "they must agree in all but the channel dimension."
            )
        self.check_output_channels(model_output.shape[1], sample.shape[1])
        if not self.learns_variance:
            return model_output, None
        prediction, variance_values = model_output.chunk(2, dim=1)
        return prediction, variance_values

    def learned_log_variance(
        self,
        variance_values: torch.Tensor,
        min_log: torch.Tensor | float,
        max_log: torch.Tensor | float,
    ) -> torch.Tensor:
        """log Sigma_t from the network's v: v itself for "learned"; for "learned_range" (Nichol & Dhariwal 2021
        eq. 15) frac max_log + (1 - frac) min_log with frac = (v + 1) / 2, min_log = log sigma~^2_t (clipped) and
        max_log = log beta_t of the chain being sampled or bounded."""
        if self.config.variance_type == "learned":
            return variance_values
        frac = (variance_values + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    # ----------------------------------------------------------------------------------------------------------
    # Forward process and posterior, batched over timesteps (training tables, every t).

    def _table(self, name: str, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Gather table `name` at `timesteps`, on `like`'s device and dtype, shaped to broadcast against it."""
        key = (like.device, like.dtype)
        tables = self._device_tables.setdefault(key, {})
        if name not in tables:
            tables[name] = getattr(self, name).to(device=like.device, dtype=like.dtype)
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor(timesteps)
        values = tables[name].take(timesteps.to(like.device).long())
        return values.view(values.shape + (1,) * (like.ndim - values.ndim))

    @property
    def sqrt_alphas_cumprod(self) -> torch.Tensor:
        return self.alphas_cumprod.sqrt()

    @property
    def sqrt_one_minus_alphas_cumprod(self) -> torch.Tensor:
        return (1 - self.alphas_cumprod).sqrt()

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, a draw from q(x_t | x_0) (Ho et al. eq. 4)."""
        a = self._table("sqrt_alphas_cumprod", timesteps, original_samples)
        b = self._table("sqrt_one_minus_alphas_cumprod", timesteps, original_samples)
        return torch.mul(original_samples, a).addcmul_(b, noise)

    def alpha_bar(self, timestep: int) -> float:
        """alpha_bar of table index `timestep`, a Python float; 1 at -1, the data (alpha_bar_0 = 1)."""
        return 1.0 if timestep == -1 else self.alphas_cumprod[timestep].item()

    def add_noise_between(
        self, sample: torch.Tensor, noise: torch.Tensor, timestep: int, to_timestep: int
    ) -> torch.Tensor:
        """x_{t'} = sqrt(alpha_bar_{t'} / alpha_bar_t) x_t + sqrt(1 - alpha_bar_{t'} / alpha_bar_t) eps, a draw from
        q(x_{t'} | x_t) for t' > t: the forward steps t+1..t' (Ho et al. eq. 2) composed into one. `timestep` -1 is
        the data, where this is `add_noise`. RePaint's jump back (Lugmayr et al. 2022, Algorithm 1 line 9)."""
        if not -1 <= timestep < to_timestep < len(self):
            raise ValueError(
                f"add_noise_between needs -1 <= timestep < to_timestep < {len(self)}, got {timestep}, {to_timestep}."
            )
        ratio = self.alpha_bar(to_timestep) / self.alpha_bar(timestep)
        return torch.mul(sample, math.sqrt(ratio)).add_(noise, alpha=math.sqrt(1 - ratio))

    def ddim_inverse_step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor) -> torch.Tensor:
        """x_t from x_{t'}: deterministic DDIM (Song et al. 2021 eq. 12, eta = 0) run forwards, from t' (the step
        after `timestep` in the current schedule; the data after the last) up to t = `timestep`.

        `model_output` is the network's output at (x_{t'}, t), read as if x_{t'} were at t: eps_hat = (x_{t'} -
        sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t) with x0_hat from `predict_original_sample` (unclipped).
        Then x_t = sqrt(alpha_bar_t / alpha_bar_{t'}) (x_{t'} - sqrt(1 - alpha_bar_{t'}) eps_hat)
        + sqrt(1 - alpha_bar_t) eps_hat, which `step(eta=0)` from t maps back to x_{t'} exactly when the network's
        eps_hat at (x_t, t) is the same (for Design II: the same output). The difference, the probability-flow
        ODE's discretisation error, falls as the steps get smaller. Reading eps_hat, not x0_hat, keeps the step
        invertible at the last one, where x_0 = x0_hat would forget x_t. Decode with `clip_sample=False` (clipping
        has no inverse). As diffusers' DDIMInverseScheduler for epsilon prediction.
        """
        prediction, _ = self.split_model_output(model_output, sample)
        alpha_bar, alpha_bar_next, _ = self._ddim_tables[int(timestep)]  # alpha_bar_t, alpha_bar_{t'}
        t = torch.tensor([int(timestep)], device=sample.device)
        x0_hat = self.predict_original_sample(prediction, sample, t)
        eps_hat = (sample - math.sqrt(alpha_bar) * x0_hat) / math.sqrt(1 - alpha_bar)
        x0_at_next = (sample - math.sqrt(1 - alpha_bar_next) * eps_hat) / math.sqrt(alpha_bar_next)
        return math.sqrt(alpha_bar) * x0_at_next + math.sqrt(1 - alpha_bar) * eps_hat

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022); `sample` is x_0."""
        a = self._table("sqrt_alphas_cumprod", timesteps, sample)
        b = self._table("sqrt_one_minus_alphas_cumprod", timesteps, sample)
        return a * noise - b * sample

    def get_target(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the network should output for x_t = add_noise(x_0, eps, t) under `prediction_type`."""
        if self.config.prediction_type == "epsilon":
            return noise
        if self.config.prediction_type == "sample":
            return original_samples
        return self.get_velocity(original_samples, noise, timesteps)

    def predict_original_sample(
        self, model_output: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """x0_hat from the network's output at x_t (before clipping); Ho et al. eq. 15 for Design II."""
        if self.config.prediction_type == "sample":
            return model_output
        a = self._table("sqrt_alphas_cumprod", timesteps, sample)
        b = self._table("sqrt_one_minus_alphas_cumprod", timesteps, sample)
        if self.config.prediction_type == "epsilon":
            return (sample - b * model_output) / a
        return a * sample - b * model_output

    def q_posterior(
        self, original_samples: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 6-7), broadcast to the sample's shape.

        mu_q = (sqrt(alpha_t)(1 - alpha_bar_{t-1}) x_t + sqrt(alpha_bar_{t-1}) beta_t x_0) / (1 - alpha_bar_t),
        sigma^2(t) = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
        """
        mean = (
            self._table("posterior_mean_coef1", timesteps, sample) * original_samples
            + self._table("posterior_mean_coef2", timesteps, sample) * sample
        )
        variance = self._table("posterior_variance", timesteps, sample).expand_as(sample)
        return mean, variance

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        clip_sample: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the model's p(x_{t-1} | x_t), and x0_hat (clipped when `clip_sample`).

        Both designs go through x0_hat: mu = mu_q(x_t, x0_hat), which equals Ho et al.'s eq. 11 for Design II.
        x0_hat is thresholded or clipped exactly as in `step`, so the bound is that of the sampler.
        With a learned variance, `model_output` has 2C channels and the log-variance is `learned_log_variance` of
        its last C, between the T-step chain's log sigma~^2_t (clipped) and log beta_t. `clip_sample` overrides
        the config's; False leaves x0_hat neither clipped nor thresholded (training, as improved-diffusion's
        `training_losses`: clipping would cut the gradient).
        """
        prediction, variance_values = self.split_model_output(model_output, sample)
        pred_original_sample = self.predict_original_sample(prediction, sample, timesteps)
        pred_original_sample = self.clip_predicted_x0(pred_original_sample, clip_sample)
        mean, _ = self.q_posterior(pred_original_sample, sample, timesteps)
        if variance_values is None:
            log_variance = self._table("model_log_variance", timesteps, sample).expand_as(sample)
        else:
            min_log = self._table("posterior_log_variance_clipped", timesteps, sample)
            max_log = self._table("log_betas", timesteps, sample)
            log_variance = self.learned_log_variance(variance_values.to(sample.dtype), min_log, max_log)
        return mean, log_variance, pred_original_sample

    def clip_predicted_x0(self, pred_original_sample: torch.Tensor, clip_sample: bool | None = None) -> torch.Tensor:
        """x0_hat thresholded or clipped as `step` does; `clip_sample` overrides the config's (False: neither)."""
        clip = self.config.clip_sample if clip_sample is None else clip_sample
        if self.config.thresholding and clip_sample is not False:
            return self.dynamic_threshold(pred_original_sample)
        if clip:
            r = self.config.clip_sample_range
            return pred_original_sample.clamp(-r, r)
        return pred_original_sample

    def predicted_noise(
        self, model_output: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """eps_hat, the noise implied by the prediction (first C channels of `model_output`) at x_t, unclipped:
        eps_hat = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t), v: sqrt(alpha_bar_t) v + sqrt(1 -
        alpha_bar_t) x_t. What G_t of `analytic_variance` averages the square of."""
        prediction, _ = self.split_model_output(model_output, sample)
        if self.config.prediction_type == "epsilon":
            return prediction
        a = self._table("sqrt_alphas_cumprod", timesteps, sample)
        b = self._table("sqrt_one_minus_alphas_cumprod", timesteps, sample)
        if self.config.prediction_type == "v_prediction":
            return a * prediction + b * sample
        return (sample - a * prediction) / b

    def dynamic_threshold(self, pred_original_sample: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding of x0_hat (Saharia et al. 2022, sec. 2.3), per image.

        s = clamp(quantile_p(|x0_hat|), 1, sample_max_value) with p = `dynamic_thresholding_ratio`, then
        x0_hat <- clip(x0_hat, -s, s) / s. Half precision is computed in float32 (torch.quantile needs it).
        """
        flat = pred_original_sample.flatten(1)
        if flat.dtype not in (torch.float32, torch.float64):
            flat = flat.float()
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1, keepdim=True)
        s = torch.clamp(s, min=1, max=self.config.sample_max_value)
        thresholded = torch.clamp(flat, -s, s) / s
        return thresholded.to(pred_original_sample.dtype).view_as(pred_original_sample)

    def _check_bound_is_defined(self) -> None:
        if self.config.prediction_type == "epsilon" and self.alphas_cumprod[-1].item() == 0:
            raise ValueError(
                "The bound is undefined for prediction_type='epsilon' with rescale_betas_zero_snr=True: at t = T, "
                "x0_hat = (x_T - eps_hat) / sqrt(alpha_bar_T) divides by 0; use 'v_prediction' (Lin et al. 2023)."
            )

    # ----------------------------------------------------------------------------------------------------------
    # Training-loss weights.

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        """SNR(t) = alpha_bar_t / (1 - alpha_bar_t), float64, on the timesteps' device."""
        alpha_bar = self._table("alphas_cumprod", timesteps, self._float64_on(timesteps.device))
        return alpha_bar / (1 - alpha_bar)

    @staticmethod
    def _float64_on(device: torch.device) -> torch.Tensor:
        """A 0-d float64 tensor: the `like` of `_table` for per-timestep weights, shaped as the timesteps."""
        return torch.empty((), dtype=torch.float64, device=device)

    def loss_weights(self, timesteps: torch.Tensor, weighting: str = "simple", snr_gamma: float = 5.0) -> torch.Tensor:
        """Per-sample weights w(t) for the loss w(t) * mean((model_output - get_target(...))^2).

        - "simple": 1 (Ho et al.'s L_simple for Design II; the plain MSE of the target for the others).
        - "elbo": the weight that makes w(t) * mean((model_output - target)^2) exactly the KL term
          KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) of the ELBO, per dimension, in nats (Ho et al. eq. 5, 8-12):
          Design I:  beta_t^2 alpha_bar_{t-1} / (2 s^2 (1 - alpha_bar_t)^2), which for s^2 = sigma^2(t) is
                     0.5 (SNR(t-1) - SNR(t));
          Design II: beta_t^2 / (2 s^2 (1 - alpha_bar_t) alpha_t);
          v:         Design I's weight times (1 - alpha_bar_t), since x0 - x0_hat = -sqrt(1 - alpha_bar_t)(v - v_hat);
          with s^2 the model's variance (`variance_type`; at t = 1, where sigma^2(1) = 0, the clipped sigma^2(2);
          for a learned variance, the weight of "fixed_small", and the bound itself is trained by L_vlb, see
          `simple_ddpm.training_losses`).
        - "min_snr": Min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) on x_0, i.e. min(SNR, gamma) / SNR for
          Design II (its limit 1 where SNR = 0, at t = T under zero terminal SNR), min(SNR, gamma) for Design I
          and min(SNR, gamma) / (SNR + 1) for v.

        Returned in float32 on the timesteps' device.
        """
        _choose("loss weighting", weighting, LOSS_WEIGHTINGS)
        prediction_type = self.config.prediction_type
        t = timesteps.long()
        if weighting == "simple":
            return torch.ones(t.shape, device=t.device)
        if weighting == "min_snr":
            snr = self.snr(t)
            clipped = snr.clamp(max=snr_gamma)
            epsilon = torch.where(snr > 0, clipped / snr, torch.ones_like(snr))
            weights = {"epsilon": epsilon, "sample": clipped, "v_prediction": clipped / (snr + 1)}
            return weights[prediction_type].float()
        self._check_bound_is_defined()
        # gathered from the tables cached per device, not copied to the device at every training step
        beta, alpha, alpha_bar, alpha_bar_prev, log_variance = (
            self._table(name, t, self._float64_on(t.device))
            for name in ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "model_log_variance")
        )
        variance = log_variance.exp()
        weight_x0 = beta**2 * alpha_bar_prev / (2 * variance * (1 - alpha_bar) ** 2)
        weights = {
            "sample": weight_x0,
            "epsilon": beta**2 / (2 * variance * (1 - alpha_bar) * alpha),
            "v_prediction": weight_x0 * (1 - alpha_bar),
        }
        return weights[prediction_type].float()

    # ----------------------------------------------------------------------------------------------------------
    # The variational bound, term by term, in bits per dimension (Ho et al. eq. 5).

    def prior_bpd(self, original_samples: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per image, in bits/dim; 0 under zero terminal SNR, where q(x_T | x_0)
        is N(0, I). `timestep`: the chain's first step instead of T (default T)."""
        timestep = len(self) - 1 if timestep is None else timestep
        t = torch.full(original_samples.shape[:1], timestep, device=original_samples.device)
        mean = self._table("sqrt_alphas_cumprod", t, original_samples) * original_samples
        log_variance = torch.log1p(-self._table("alphas_cumprod", t, original_samples)).expand_as(mean)
        zero = torch.zeros_like(mean)
        return _mean_over_pixels(normal_kl(mean, log_variance, zero, zero)) / math.log(2)

    def vb_terms_bpd(
        self,
        model_output: torch.Tensor,
        original_samples: torch.Tensor,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        clip_sample: bool | None = None,
    ) -> torch.Tensor:
        """The bound's term at each (x_0, x_t, t) per image, in bits/dim (improved-diffusion's `_vb_terms_bpd`).

        `model_output` is the network's output, 2C channels with a learned variance.
        For t >= 2 (index >= 1): L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)).
        For t = 1 (index 0): L_0 = -log p(x_0 | x_1) under the discretized Gaussian decoder with mean mu(x_1)
        and the model's log-variance at t = 1 (sigma^2(2) for a fixed variance, see `model_log_variance`).
        Compute in float64 for an exact bound. `clip_sample` overrides the config's, as in `p_mean_variance`.
        """
        self._check_bound_is_defined()
        true_mean, _ = self.q_posterior(original_samples, sample, timesteps)
        true_log_variance = self._table("posterior_log_variance_clipped", timesteps, sample)
        mean, log_variance, _ = self.p_mean_variance(model_output, sample, timesteps, clip_sample)
        is_decoder = timesteps.to(sample.device) == 0
        return _term_bits(original_samples, true_mean, true_log_variance, mean, log_variance, is_decoder)

    def chain_vb_terms_bpd(
        self,
        model_output: torch.Tensor,
        original_samples: torch.Tensor,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        clip_sample: bool | None = None,
    ) -> torch.Tensor:
        """The term of the current chain's own bound (the one `step` samples, after `set_timesteps(K)`) at each
        (x_0, x_t, t) per image, in bits/dim: `vb_terms_bpd` of the respaced process (Nichol & Dhariwal sec. 4).

        For a step t -> s of the chain: KL(q(x_s | x_t, x_0) || p(x_s | x_t)), the respaced posterior
        N(coef_x0 x_0 + coef_xt x_t, beta~_{s|t}) against the model's N(coef_x0 x0_hat + coef_xt x_t, sigma^2), the
        variance as `step` draws it at eta = 1 (fixed, learned, or sigma*^2 without the sampling rule of
        `analytic_clip_pixels`). The last step is the decoder -log p(x_0 | x_t), discretized as in `vb_terms_bpd`,
        with the next-to-last step's beta~ for the fixed variances and its own sigma*^2 for the analytic one.
        """
        self._check_bound_is_defined()
        t = timesteps.to(sample.device).long()
        on_chain = self._chain_tables["on_chain"].to(t.device).take(t)
        if not bool((on_chain == 1).all()):
            raise ValueError(
                f"timesteps {sorted(set(t[on_chain != 1].tolist()))} are not in the current schedule; call "
                "set_timesteps first and pass steps of `scheduler.timesteps`."
            )

        def chain(name: str) -> torch.Tensor:
            values = self._chain_tables[name].to(device=sample.device, dtype=sample.dtype).take(t)
            return values.view(values.shape + (1,) * (sample.ndim - 1))

        prediction, variance_values = self.split_model_output(model_output, sample)
        pred_original_sample = self.clip_predicted_x0(self.predict_original_sample(prediction, sample, t), clip_sample)
        true_mean = chain("coef_x0") * original_samples + chain("coef_xt") * sample
        mean = chain("coef_x0") * pred_original_sample + chain("coef_xt") * sample
        if variance_values is None:
            log_variance = chain("model_log_variance").expand_as(sample)
        else:
            log_variance = self.learned_log_variance(
                variance_values.to(sample.dtype), chain("min_log"), chain("max_log")
            )
        true_log_variance = chain("posterior_log_variance")
        is_decoder = chain("is_last").flatten() == 1
        return _term_bits(original_samples, true_mean, true_log_variance, mean, log_variance, is_decoder)

    # ----------------------------------------------------------------------------------------------------------
    # Sampling.

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the reverse-process steps: `num_inference_steps` of them by `timestep_spacing`, or `timesteps`.

        Respacing (Nichol & Dhariwal 2021, sec. 4): on the chosen steps t_1 > t_2 > ... > t_n the process is
        a DDPM of its own with beta'_i = 1 - alpha_bar_{t_i} / alpha_bar_{t_{i+1}} (alpha_bar after the last
        step is 1), so every `step` samples the exact posterior of that shorter process. A learned variance
        interpolates between that chain's own log sigma~'^2_i (clipped at the last step as at t = 1) and
        log beta'_i, as improved-diffusion's respaced diffusion does.
        """
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("Pass exactly one of `num_inference_steps` or `timesteps`.")
        if timesteps is not None:
            steps = np.asarray(list(timesteps), dtype=np.int64)
            if steps.ndim != 1 or len(steps) == 0:
                raise ValueError("`timesteps` must be a non-empty list of integers.")
            if np.any(np.diff(steps) >= 0):
                raise ValueError(f"`timesteps` must be strictly decreasing, got {steps.tolist()}.")
            if steps[0] >= T or steps[-1] < 0:
                raise ValueError(f"`timesteps` must lie in [0, {T - 1}], got {steps[0]} .. {steps[-1]}.")
        else:
            n = num_inference_steps
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= T:
                raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {n!r}.")
            spacing = self.config.timestep_spacing
            if spacing == "optimal":
                steps = np.asarray(self.optimal_timesteps(n), dtype=np.int64)
            elif spacing == "linspace":
                steps = np.round(np.linspace(0, T - 1, n)).astype(np.int64)[::-1]
            elif spacing == "leading":
                steps = (np.arange(n) * (T // n) + self.config.steps_offset)[::-1]
            else:
                steps = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
            steps = np.array(steps)  # a copy: ascontiguousarray keeps the negative stride of a 1-element view
            if not (np.all(np.diff(steps) < 0) and 0 <= steps[-1] and steps[0] < T):
                raise ValueError(f"timestep_spacing={spacing!r} with steps_offset gives invalid steps {steps}.")
        self.num_inference_steps = len(steps)
        self.timesteps = torch.from_numpy(steps).to(device)
        self._set_step_coefficients(steps)

    def _set_step_coefficients(self, steps: np.ndarray) -> None:
        """Per-step coefficients of `step` on the chain `steps`, as Python floats.

        x0_hat = c_x x_t - c_out output, for Design II (x_t - c_out output) c_x (Ho et al. eq. 15, infinite rather
        than NaN where alpha_bar_t = 0, as in diffusers); mean = coef_x0 x0_hat + coef_xt x_t; std of the noise.
        """
        alpha_bar = self.alphas_cumprod[torch.from_numpy(steps)]
        alpha_bar_prev = torch.cat([alpha_bar[1:], torch.ones(1, dtype=torch.float64)])
        beta = 1 - alpha_bar / alpha_bar_prev  # beta'_i of the respaced process
        coef_x0 = alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)
        coef_xt = (1 - beta).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
        posterior_variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)  # sigma~'^2_i, 0 at the last step
        variance = {"fixed_large": beta, "analytic": self._chain_analytic_variance(steps, posterior_variance)}.get(
            self.config.variance_type, posterior_variance
        )
        std = variance.sqrt()
        std[-1] = 0.0  # no noise at the last step
        if self.config.variance_type == "analytic" and len(steps) > 1:
            std[-2] = self._clip_analytic_std(float(std[-2]))
        if self.config.prediction_type == "epsilon":
            c_x, c_out = 1 / alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        elif self.config.prediction_type == "v_prediction":
            c_x, c_out = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        else:
            c_x, c_out = torch.zeros_like(alpha_bar), -torch.ones_like(alpha_bar)
        rows = torch.stack([c_x, c_out, coef_x0, coef_xt, std], 1).tolist()
        self._step_coefficients = dict(zip(steps.tolist(), map(tuple, rows), strict=True))
        # alpha_bar_{t_i}, alpha_bar_{t_{i+1}} and sigma^2 of the respaced posterior, for DDIM's step (`eta`)
        ddim_rows = torch.stack([alpha_bar, alpha_bar_prev, posterior_variance], 1)
        self._ddim_tables = dict(zip(steps.tolist(), map(tuple, ddim_rows.tolist()), strict=True))
        self._second_to_last_step = int(steps[-2]) if len(steps) > 1 else None
        # The last step adds no noise; the bound's decoder uses the next-to-last's variance, as sigma^2(1) is
        # replaced by sigma^2(2) in the T-step chain (improved-diffusion's respaced diffusion does the same).
        clipped_posterior_variance = posterior_variance.clone()
        clipped_posterior_variance[-1] = posterior_variance[-2] if len(steps) > 1 else beta[-1]
        self._step_log_variance_range = {}
        if self.learns_variance:
            ranges = torch.stack([clipped_posterior_variance.log(), beta.log()], 1).tolist()
            self._step_log_variance_range = dict(zip(steps.tolist(), map(tuple, ranges), strict=True))
        # The chain's own bound (`chain_vb_terms_bpd`): per-timestep tables of length T, 0 off the chain.
        bound_variance = {
            "fixed_large": torch.cat([beta[:-1], clipped_posterior_variance[-1:]]),
            "analytic": variance.clamp(min=torch.finfo(torch.float64).tiny),  # sigma*^2 without the pixel rule
        }.get(self.config.variance_type, clipped_posterior_variance)
        columns = {
            "coef_x0": coef_x0,
            "coef_xt": coef_xt,
            "posterior_log_variance": posterior_variance.clamp(min=torch.finfo(torch.float64).tiny).log(),
            "model_log_variance": bound_variance.log(),
            "min_log": clipped_posterior_variance.log(),
            "max_log": beta.log(),
            "is_last": (torch.arange(len(steps)) == len(steps) - 1).double(),
            "on_chain": torch.ones(len(steps), dtype=torch.float64),
        }
        index = torch.from_numpy(steps)
        self._chain_tables = {}
        for name, values in columns.items():
            self._chain_tables[name] = torch.zeros(len(self), dtype=torch.float64).index_copy_(0, index, values)

    def _chain_analytic_variance(self, steps: np.ndarray, lambda2: torch.Tensor) -> torch.Tensor | None:
        """sigma*^2 of each step of the chain `steps` with noise lambda^2 (`analytic_variance`); None unless the
        variance is analytic."""
        if self.config.variance_type != "analytic":
            return None
        alpha_bar = self.alphas_cumprod[torch.from_numpy(steps)]
        alpha_bar_prev = torch.cat([alpha_bar[1:], torch.ones(1, dtype=torch.float64)])
        mean_squared_eps = self.analytic_mean_squared_eps[torch.from_numpy(steps)]
        return analytic_variance(alpha_bar, alpha_bar_prev, lambda2, mean_squared_eps)

    def _clip_analytic_std(self, std: float) -> float:
        """The second-to-last step's std, at most y (2/255) sqrt(pi/2) so that E|std z| <= y 2/255 (Bao et al.
        2022, App. F.2; y = `analytic_clip_pixels`, None: unbounded)."""
        y = self.config.analytic_clip_pixels
        return std if y is None else min(std, y * PIXEL_BIN * math.sqrt(math.pi / 2))

    def ddim_coefficients(self, timestep: int, eta: float) -> tuple[float, float, float]:
        """(coef_x0, coef_xt, sigma) of DDIM's step x_{t'} = coef_x0 x0_hat + coef_xt x_t + sigma z, z ~ N(0, I).

        Song et al. 2021, eq. 12: x_{t'} = sqrt(alpha_bar_{t'}) x0_hat + sqrt(1 - alpha_bar_{t'} - sigma^2) eps_hat
        + sigma z, with t' the next step of the current schedule (alpha_bar = 1 after the last),
        eps_hat = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t) derived from the (clipped) x0_hat, and
        eq. 16: sigma = eta sqrt((1 - alpha_bar_{t'}) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_{t'}),
        eta times the respaced chain's posterior standard deviation. eta = 1 is DDPM's posterior mean and
        variance; eta = 0 is deterministic DDIM. With `variance_type="analytic"` the mean is the same and sigma is
        sigma*_{t'|t} for lambda = the sigma above (Bao et al. 2022 eq. 9, `analytic_variance`), 0 at the last step.
        """
        alpha_bar, alpha_bar_prev, posterior_variance = self._ddim_tables[timestep]
        sigma = eta * math.sqrt(posterior_variance)
        direction = math.sqrt(max(1 - alpha_bar_prev - sigma**2, 0.0))  # coefficient of eps_hat
        coef_xt = direction / math.sqrt(1 - alpha_bar)
        coef_x0 = math.sqrt(alpha_bar_prev) - coef_xt * math.sqrt(alpha_bar)
        if self.config.variance_type == "analytic" and alpha_bar_prev < 1:
            variance = analytic_variance(
                torch.tensor(alpha_bar, dtype=torch.float64),
                torch.tensor(alpha_bar_prev, dtype=torch.float64),
                torch.tensor(sigma**2, dtype=torch.float64),
                self.analytic_mean_squared_eps[timestep],
            )
            sigma = math.sqrt(variance.item())
            if timestep == self._second_to_last_step:
                sigma = self._clip_analytic_std(sigma)
        return coef_x0, coef_xt, sigma

    def optimal_timesteps(self, num_inference_steps: int) -> list[int]:
        """The K = `num_inference_steps` timesteps T-1 = tau_K > ... > tau_1 = 0 whose chain has the least expected
        bound (Bao et al. 2022, eq. 14, by `optimal_timestep_path`); decreasing, as `set_timesteps` takes them.

        The chain's bound is prior + sum_k E KL_k + decoder; prior and decoder do not depend on the interior steps.
        With the KL-optimal variance, E KL of a step t -> s is (d/2) J(s, t), J = log(sigma*^2 / lambda^2), lambda^2
        = beta~_{s|t}. For a fixed variance sigma^2 (beta~_{s|t} or beta_{t|s}), the same table of G_t gives the
        step's expected KL without network calls: E KL = (d/2) (log(sigma^2 / lambda^2) - 1 + sigma*^2 / sigma^2),
        because lambda^2 + E||mean error||^2 / d = sigma*^2 for the model's own mean (eq. 9's derivation); this is
        exact for an exact score and otherwise the analytic estimate of each term; the decoder's variance, the
        beta~ of the step into tau_1 (`chain_vb_terms_bpd`), adds its expected cost to that step (`step_costs`).
        The estimate of G_t must be good where 1 - G_t is small: an error there multiplies a long step's factor in
        eq. 9. A learned variance depends on
        x_t, so it has no such cost: use another `timestep_spacing`. Cached per K.
        """
        T = len(self)
        if self.analytic_mean_squared_eps is None:
            raise ValueError(
                "optimal timesteps need analytic_mean_squared_eps (the model's mean squared predicted noise per "
                "timestep): estimate it with pipe.estimate_analytic_variance(images) or `simple-ddpm analytic`."
            )
        if self.learns_variance:
            raise ValueError(
                f"optimal timesteps need a fixed or analytic variance; variance_type={self.config.variance_type!r} "
                "depends on x_t. Use timestep_spacing 'linspace'."
            )
        if isinstance(num_inference_steps, bool) or not 1 <= num_inference_steps <= T:
            raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {num_inference_steps!r}.")
        cache = self.__dict__.setdefault("_optimal_timesteps", {})
        if num_inference_steps not in cache:
            cache[num_inference_steps] = optimal_timestep_path(self.step_costs(), num_inference_steps)
        return list(cache[num_inference_steps])

    def step_costs(self) -> np.ndarray:
        """J[s, t] for every pair of timestep indices s < t: 2 / d times the expected KL term of a DDPM step t -> s
        under this scheduler's variance (see `optimal_timesteps`), +inf where s >= t. T x T, float64."""
        alpha_bar = self.alphas_cumprod
        alpha_bar_s, alpha_bar_t = alpha_bar[:, None], alpha_bar[None, :]
        below = torch.ones(len(self), len(self), dtype=torch.bool).triu(1)  # s < t
        alpha_bar_s = torch.where(below, alpha_bar_s, 0.5)  # placeholders where s >= t, masked below
        alpha_bar_t = torch.where(below, alpha_bar_t, 0.25)
        beta = 1 - alpha_bar_t / alpha_bar_s  # beta_{t|s}
        lambda2 = (1 - alpha_bar_s) / (1 - alpha_bar_t) * beta  # beta~_{s|t}
        optimal = analytic_variance(alpha_bar_t, alpha_bar_s, lambda2, self.analytic_mean_squared_eps[None, :])
        variance_type = self.config.variance_type
        if variance_type == "analytic":
            cost = torch.log(optimal / lambda2)
        else:
            variance = beta if variance_type == "fixed_large" else lambda2
            cost = torch.log(variance / lambda2) - 1 + optimal / variance
            # The decoder's variance is beta~ of the step into tau_1 = 0 (see `chain_vb_terms_bpd`), so the edge
            # t -> 0 also carries the decoder's expected cost, Gaussian: log sigma^2 + E err^2 / sigma^2 + const,
            # with E err^2 / d = sigma*^2 of the step to the data (lambda^2 = 0 there).
            one = torch.ones((), dtype=torch.float64)
            decoder_error = analytic_variance(alpha_bar[0], one, 0 * one, self.analytic_mean_squared_eps[0])
            cost[0] = cost[0] + torch.log(lambda2[0]) + decoder_error / lambda2[0]
        return torch.where(below, cost, torch.inf).numpy()

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The step after `timestep` in the current schedule, as DDPMScheduler returns it: a 0-d tensor (-1 after
        the last) once `set_timesteps` was called, else `timestep - 1`."""
        if self.num_inference_steps is None:
            return timestep - 1
        index = (self.timesteps == timestep).nonzero(as_tuple=True)[0][0]
        return self.timesteps[index + 1] if index + 1 < len(self.timesteps) else torch.tensor(-1)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """DDPM feeds x_t to the network unscaled (diffusers interface)."""
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        eta: float = 1.0,
    ) -> SimpleDDPMSchedulerOutput | tuple:
        """Draw x_{t-1} ~ p(x_{t-1} | x_t) = N(mu_q(x_t, x0_hat), s^2) (Ho et al. Algorithm 2, one iteration).

        With `eta` != 1, DDIM's step instead (Song et al. 2021 eq. 12 and 16, see `ddim_coefficients`).

        Args:
            model_output (`torch.Tensor`): the network's output at (x_t, t), shaped like `sample`; with a learned
                variance, 2C channels (the prediction, then v, see `learned_log_variance`).
            timestep (`int`): t, one of `self.timesteps` (before `set_timesteps`, of the full chain T-1, ..., 0).
            sample (`torch.Tensor`): x_t.
            generator (`torch.Generator` or list of them, *optional*): for the added noise; a list gives one
                generator per image.
            return_dict (`bool`, defaults to True): return a `SimpleDDPMSchedulerOutput` rather than a tuple.
            eta (`float`, defaults to 1.0): in [0, 1], the weight of the noise: 1 is DDPM (exactly the step without
                `eta`), 0 is deterministic DDIM. Values other than 1 need `variance_type` "fixed_small" or
                "analytic".
        """
        if eta != 1:
            if not 0 <= eta <= 1:
                raise ValueError(f"eta must lie in [0, 1] (0: DDIM, 1: DDPM), got {eta}.")
            if self.config.variance_type not in ("fixed_small", "analytic"):
                raise ValueError(
                    f"eta={eta} scales the posterior standard deviation (DDIM eq. 16), which needs "
                    f"variance_type='fixed_small' or 'analytic'; this scheduler has {self.config.variance_type!r}. "
                    "Use eta=1."
                )
        model_output, variance_values = self.split_model_output(model_output, sample)
        t = int(timestep)
        try:
            c_x, c_out, coef_x0, coef_xt, std = self._step_coefficients[t]
        except KeyError:
            raise ValueError(
                f"timestep {t} is not in the current schedule of {len(self.timesteps)} steps "
                f"({self.timesteps[0].item()} .. {self.timesteps[-1].item()}); pass one of `scheduler.timesteps`."
            ) from None
        if eta != 1:
            coef_x0, coef_xt, std = self.ddim_coefficients(t, eta)

        # One pass over the batch per line, in place on the tensors made here. In-place ops keep their left
        # operand's dtype, so x_t is first cast to the dtype that torch.add would promote mixed inputs to.
        x_t = sample.to(torch.promote_types(sample.dtype, model_output.dtype))
        r = self.config.clip_sample_range
        if self.config.prediction_type == "sample":
            pred_original_sample = model_output
        elif self.config.prediction_type == "epsilon":
            pred_original_sample = torch.sub(x_t, model_output, alpha=c_out).mul_(c_x)
        else:
            pred_original_sample = torch.mul(x_t, c_x).sub_(model_output, alpha=c_out)
        if self.config.thresholding:  # instead of clipping, as in diffusers
            pred_original_sample = self.dynamic_threshold(pred_original_sample)
        elif self.config.clip_sample and pred_original_sample is model_output:
            pred_original_sample = model_output.clamp(-r, r)
        elif self.config.clip_sample:
            pred_original_sample.clamp_(-r, r)
        prev_sample = torch.mul(x_t, coef_xt).add_(pred_original_sample, alpha=coef_x0)
        if std > 0:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            if variance_values is None:
                prev_sample.add_(noise, alpha=std)
            else:
                min_log, max_log = self._step_log_variance_range[t]
                log_variance = self.learned_log_variance(variance_values.to(prev_sample.dtype), min_log, max_log)
                prev_sample.addcmul_(noise, torch.exp(0.5 * log_variance))

        if not return_dict:
            return prev_sample, pred_original_sample
        return SimpleDDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
