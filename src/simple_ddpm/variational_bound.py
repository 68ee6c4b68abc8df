"""The variational bound of a DDPM chain in bits per dimension, term by term (Ho et al. 2020 eq. 5, 13;
improved-diffusion's `_vb_terms_bpd`). The terms are exact in float64; on a device without float64 (Apple MPS)
they are computed in float32 (`ddpm_chain.table_dtype`)."""

import math

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .ddpm_chain import DDPMChain


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


def mean_over_pixels(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def term_bits(
    original_samples: torch.Tensor,
    true_mean: torch.Tensor,
    true_log_variance: torch.Tensor,
    mean: torch.Tensor,
    log_variance: torch.Tensor,
    is_decoder: torch.Tensor,
) -> torch.Tensor:
    """A term of the bound per image in bits/dim: KL(q || p) of the two Gaussians, or where `is_decoder`,
    -log p(x_0 | x_1) under the discretized decoder N(mean, e^log_variance) (Ho et al. eq. 5 and 13)."""
    kl = mean_over_pixels(normal_kl(true_mean, true_log_variance, mean, log_variance))
    nll = -mean_over_pixels(discretized_gaussian_log_likelihood(original_samples, mean, 0.5 * log_variance))
    return torch.where(is_decoder, nll, kl) / math.log(2)


def prior_bpd(original_samples: torch.Tensor, sqrt_alpha_bar: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) per image in bits/dim, q(x_T | x_0) = N(sqrt(alpha_bar) x_0, 1 - alpha_bar)
    (Ho et al. eq. 4-5), with the two coefficients shaped to broadcast against `original_samples`."""
    mean = sqrt_alpha_bar * original_samples
    log_variance = torch.log1p(-alpha_bar).expand_as(mean)
    zero = torch.zeros_like(mean)
    return mean_over_pixels(normal_kl(mean, log_variance, zero, zero)) / math.log(2)


def q_posterior_mean(
    chain: DDPMChain, original_samples: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """mu_q = coef_x0 x_0 + coef_xt x_t, the mean of q(x_s | x_t, x_0) for the chain's step t -> s (Ho et al.
    eq. 7 with the chain's beta'); `timesteps` long, on the sample's device."""
    return (
        chain.gather("coef_x0", timesteps, sample) * original_samples
        + chain.gather("coef_xt", timesteps, sample) * sample
    )


def p_mean_variance(
    scheduler: SchedulerMixin,
    chain: DDPMChain,
    model_output: torch.Tensor,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    clip_sample: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and log-variance of the model's p(x_s | x_t) on `chain`, and x0_hat: mu = mu_q(x_t, x0_hat) (Ho et al.
    eq. 11 for Design II), x0_hat thresholded or clipped as `step` does (`clip_sample` overrides the config's;
    False: neither), the variance the chain's `model_log_variance` or the network's learned one."""
    t = torch.as_tensor(timesteps, device=sample.device).long()
    prediction, variance_values = scheduler.split_model_output(model_output, sample)
    pred_original_sample = scheduler.predict_original_sample(prediction, sample, t)
    pred_original_sample = scheduler.clip_predicted_x0(pred_original_sample, clip_sample)
    mean = q_posterior_mean(chain, pred_original_sample, sample, t)
    if variance_values is None:
        log_variance = chain.gather("model_log_variance", t, sample).expand_as(sample)
    else:
        min_log, max_log = chain.gather("min_log", t, sample), chain.gather("max_log", t, sample)
        log_variance = scheduler.learned_log_variance(variance_values.to(sample.dtype), min_log, max_log)
    return mean, log_variance, pred_original_sample


def vb_terms_bpd(
    scheduler: SchedulerMixin,
    chain: DDPMChain,
    model_output: torch.Tensor,
    original_samples: torch.Tensor,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    clip_sample: bool | None = None,
) -> torch.Tensor:
    """The term of `chain`'s bound at each (x_0, x_t, t) per image, in bits/dim (Ho et al. eq. 5; respaced chains:
    Nichol & Dhariwal 2021 sec. 4).

    For a step t -> s: KL(q(x_s | x_t, x_0) || p(x_s | x_t)), the posterior N(coef_x0 x_0 + coef_xt x_t, beta~)
    against the model's N(coef_x0 x0_hat + coef_xt x_t, sigma^2), x0_hat thresholded or clipped as `step` does
    (`clip_sample` overrides the config's), sigma^2 the chain's `model_log_variance` or the network's learned one.
    The last step is the decoder -log p(x_0 | x_t) (`discretized_gaussian_log_likelihood`). `scheduler` reads the
    network's output (`SimpleDDPMScheduler`).
    """
    scheduler.check_bound_is_defined()
    t = timesteps.to(sample.device).long()
    if len(chain.timesteps) < len(chain.tables["on_chain"]):
        chain.check_on_chain(t)
    true_mean = q_posterior_mean(chain, original_samples, sample, t)
    mean, log_variance, _ = p_mean_variance(scheduler, chain, model_output, sample, t, clip_sample)
    true_log_variance = chain.gather("posterior_log_variance", t, sample)
    is_decoder = chain.gather("is_last", t, sample).flatten() == 1
    return term_bits(original_samples, true_mean, true_log_variance, mean, log_variance, is_decoder)
