"""--timestep_sampling log_normal: EDM's noise distribution (Karras et al. 2022) on the discrete timesteps."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from test_recipes import train

from simple_ddpm import LogNormalSampler, SimpleDDPMScheduler, create_timestep_sampler
from simple_ddpm.model_card import objective_description
from training.arguments import parse_args


def linear_log_sigma(T: int = 1000) -> np.ndarray:
    """ln sigma_t of Ho et al.'s linear schedule, in numpy float64 from the betas (not from the scheduler)."""
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, T))
    return 0.5 * np.log((1 - alpha_bar) / alpha_bar)


def test_probabilities_are_the_normal_mass_between_midpoints_of_ln_sigma():
    scheduler = SimpleDDPMScheduler(beta_schedule="linear")
    sampler = LogNormalSampler(scheduler.alphas_cumprod, mean=-0.7, std=1.5)
    log_sigma = linear_log_sigma()
    edges = np.concatenate([[-np.inf], (log_sigma[1:] + log_sigma[:-1]) / 2, [np.inf]])
    expected = np.diff(norm.cdf(edges, loc=-0.7, scale=1.5))
    np.testing.assert_allclose(sampler.probabilities().numpy(), expected, rtol=1e-6, atol=1e-15)
    assert math.isclose(sampler.probabilities().sum().item(), 1.0, abs_tol=1e-12)


def test_draws_follow_continuous_log_normal_noise_levels_rounded_to_the_nearest_timestep():
    """An independent derivation: draw ln sigma from the normal and take the timestep of the nearest ln sigma_t;
    the sampler's frequencies match those of the rounded draws (each bin within 5 standard deviations)."""
    scheduler = SimpleDDPMScheduler(beta_schedule="linear")
    sampler = create_timestep_sampler("log_normal", 1000, scheduler.alphas_cumprod)
    n = 400_000
    timesteps, weights = sampler.sample(n, generator=torch.Generator().manual_seed(0))
    assert torch.all(weights == 1) and timesteps.dtype == torch.long
    log_sigma = linear_log_sigma()
    draws = np.random.default_rng(0).normal(-1.2, 1.2, n)
    # nearest timestep of each draw, by bisection on the increasing ln sigma_t
    right = np.clip(np.searchsorted(log_sigma, draws), 1, len(log_sigma) - 1)
    nearest = np.where(draws - log_sigma[right - 1] < log_sigma[right] - draws, right - 1, right)
    bins = np.quantile(nearest, np.linspace(0, 1, 11)).astype(int)  # ten bins of equal mass
    ours = np.histogram(timesteps.numpy(), bins)[0] / n
    theirs = np.histogram(nearest, bins)[0] / n
    spread = np.sqrt(2 * theirs * (1 - theirs) / n)
    assert np.all(np.abs(ours - theirs) < 5 * spread), (ours, theirs)
    # and the noise levels drawn have the normal's mean and spread (up to the grid's spacing)
    drawn = log_sigma[timesteps.numpy()]
    assert abs(drawn.mean() + 1.2) < 0.02 and abs(drawn.std() - 1.2) < 0.02


def test_the_sampler_reweights_the_objective_by_t_times_p_t():
    """Weights 1: the expected loss is sum_t p_t L_t, not the uniform mean (that is the point of it)."""
    sampler = LogNormalSampler(SimpleDDPMScheduler(beta_schedule="linear").alphas_cumprod)
    p = sampler.probabilities()
    per_t_loss = torch.linspace(1, 2, 1000, dtype=torch.float64)
    t, w = sampler.sample(200_000, generator=torch.Generator().manual_seed(1))
    estimate = (w.double() * per_t_loss[t]).mean()
    torch.testing.assert_close(estimate, (p * per_t_loss).sum(), rtol=2e-3, atol=0)
    assert abs((p * per_t_loss).sum() - per_t_loss.mean()) > 0.05  # not the uniform objective


@pytest.mark.parametrize(("mean", "std"), [(0.0, 0.0), (0.0, -1.0), (math.nan, 1.0), (0.0, math.inf)])
def test_a_degenerate_normal_is_refused(mean, std):
    with pytest.raises(ValueError, match="finite mean and std > 0"):
        LogNormalSampler(SimpleDDPMScheduler().alphas_cumprod, mean, std)


def test_log_normal_needs_the_schedule():
    with pytest.raises(ValueError, match="needs the 1000 alphas_cumprod"):
        create_timestep_sampler("log_normal", 1000)


def test_options_default_to_edm_and_are_recorded_in_words():
    args = parse_args(["--timestep_sampling", "log_normal"])
    assert (args.log_normal_mean, args.log_normal_std) == (-1.2, 1.2)
    args = parse_args(["--timestep_sampling", "log_normal", "--log_normal_mean", "-0.5"])
    assert (args.log_normal_mean, args.log_normal_std) == (-0.5, 1.2)
    assert parse_args([]).log_normal_mean is None
    setup = {"loss_weighting": "simple", "timestep_sampling": "log_normal", "log_normal_mean": -1.2}
    text = objective_description(setup | {"log_normal_std": 1.2})
    assert text == (
        "`simple` loss weighting; timesteps drawn with ln sigma ~ N(-1.2, 1.2^2) (EDM's noise distribution, Karras "
        "et al. 2022)"
    )


@pytest.mark.slow
def test_train_py_draws_log_normal_timesteps_and_records_them(tmp_path):
    uniform = train(tmp_path / "uniform")
    log_normal = train(tmp_path / "log_normal", "--timestep_sampling", "log_normal", "--log_normal_std", "0.5")
    assert any(not torch.equal(uniform[k], log_normal[k]) for k in uniform)  # the same seed, other timesteps
    setup = json.loads((tmp_path / "log_normal" / "metrics.json").read_text())["training"]
    assert (setup["timestep_sampling"], setup["log_normal_mean"], setup["log_normal_std"]) == ("log_normal", -1.2, 0.5)
    assert "N(-1.2, 0.5^2)" in (tmp_path / "log_normal" / "README.md").read_text()
