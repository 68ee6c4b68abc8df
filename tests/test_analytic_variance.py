"""The analytic reverse variance (Bao et al. 2022, Analytic-DPM), the K-step chain's own bound and optimal
timesteps, checked where everything is known: the exact denoiser of Gaussian data x_0 ~ N(0, s^2 I)
(tests/gaussian_denoiser.py)."""

import itertools
import math

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor
from gaussian_denoiser import ExactDenoiser, gaussian_mean_squared_eps, two_point_mean_squared_eps
from tiny_pipeline import tiny_pipeline

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler

S = 0.5  # std of the Gaussian data


def exact_pipeline(variance_type: str, s: float | None = S, num_train_timesteps: int = 1000, **config):
    """A pipeline whose network is the exact denoiser, with the exact G_t of Gaussian data as its table."""
    scheduler = SimpleDDPMScheduler(num_train_timesteps=num_train_timesteps, clip_sample=False)
    table = gaussian_mean_squared_eps(scheduler.alphas_cumprod, S if s is None else s)
    config = {"analytic_mean_squared_eps": table.tolist(), "analytic_clip_pixels": None} | config
    scheduler = SimpleDDPMScheduler.from_config(scheduler.config, variance_type=variance_type, **config)
    pipe = SimpleDDPMPipeline(unet=ExactDenoiser(scheduler.alphas_cumprod, "epsilon", s), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gaussian_images(count: int, s: float = S, seed: int = 0) -> torch.Tensor:
    """x_0 ~ N(0, s^2), 1 x 4 x 4, on the 8-bit grid."""
    x0 = (torch.randn(count, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * s).clamp(
        -1, 1
    )
    return ((x0 + 1) * 127.5).round() / 127.5 - 1


def reference_sigma2(alpha_bar_t: float, alpha_bar_s: float, lambda2: float, g: float) -> float:
    """Bao et al. 2022 eq. 9 with the bounds of eq. 11 and 12 written out separately, in Python floats (float64)."""
    factor2 = (math.sqrt((1 - alpha_bar_t) / (alpha_bar_t / alpha_bar_s)) - math.sqrt(1 - alpha_bar_s - lambda2)) ** 2
    sigma2 = lambda2 + factor2 * (1 - g)
    lower = lambda2  # eq. 11
    eq12 = (
        math.sqrt(alpha_bar_s) - math.sqrt(1 - alpha_bar_s - lambda2) * math.sqrt(alpha_bar_t / (1 - alpha_bar_t))
    ) ** 2
    upper = lambda2 + (min(factor2, eq12) if g >= 0 else eq12)  # eq. 11 (holds for g >= 0) and eq. 12 for [-1, 1]
    return min(max(sigma2, lower), upper)


@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
def test_step_draws_the_float64_transcription_of_eq_9_11_12_with_an_unchanged_mean(eta):
    T = 50
    rng = np.random.default_rng(0)
    table = rng.uniform(-1.5, 1.3, T)  # below 0 (a "prediction_error" table), above 1, near SNR_t: every clip
    analytic = SimpleDDPMScheduler(
        num_train_timesteps=T, beta_end=0.2, variance_type="analytic", analytic_mean_squared_eps=table.tolist()
    )
    fixed = SimpleDDPMScheduler(num_train_timesteps=T, beta_end=0.2)
    analytic.set_timesteps(7)
    fixed.set_timesteps(7)
    steps = analytic.timesteps.tolist()
    x_t = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    output = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for i, t in enumerate(steps):
        alpha_bar_t = analytic.alphas_cumprod[t].item()
        alpha_bar_s = analytic.alphas_cumprod[steps[i + 1]].item() if i + 1 < len(steps) else 1.0
        lambda2 = eta**2 * (1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)
        expected = 0.0 if i + 1 == len(steps) else reference_sigma2(alpha_bar_t, alpha_bar_s, lambda2, table[t])
        if i + 2 == len(steps):  # App. F.2: E|sigma z| <= 2 * 2/255 at the second-to-last step
            expected = min(expected, (2 * 2 / 255) ** 2 * math.pi / 2)
        z = randn_tensor(x_t.shape, generator=torch.Generator().manual_seed(3), dtype=x_t.dtype)
        ours = analytic.step(output, t, x_t, eta=eta, generator=torch.Generator().manual_seed(3)).prev_sample
        theirs = fixed.step(output, t, x_t, eta=eta, generator=torch.Generator().manual_seed(3)).prev_sample
        fixed_std = eta * math.sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s))
        torch.testing.assert_close(ours - math.sqrt(expected) * z, theirs - fixed_std * z, rtol=0, atol=1e-12)
        if eta == 1 and i + 2 < len(steps):  # DDPM's simplified form, where no bound is active
            beta, alpha = 1 - alpha_bar_t / alpha_bar_s, alpha_bar_t / alpha_bar_s
            simplified = beta / alpha * (1 - beta * table[t] / (1 - alpha_bar_t))
            if lambda2 < simplified < reference_sigma2(alpha_bar_t, alpha_bar_s, lambda2, 0.0):
                assert math.isclose(simplified, expected, rel_tol=1e-12)


def test_bound_table_is_the_transcription_of_eq_9_at_every_timestep():
    pipe = exact_pipeline("analytic", num_train_timesteps=100)
    scheduler = pipe.scheduler
    for t in range(100):
        alpha_bar_t = scheduler.alphas_cumprod[t].item()
        alpha_bar_s = scheduler.alphas_cumprod[t - 1].item() if t else 1.0
        lambda2 = scheduler.posterior_variance[t].item()
        g = scheduler.analytic_mean_squared_eps[t].item()
        expected = reference_sigma2(alpha_bar_t, alpha_bar_s, lambda2, g)
        assert math.isclose(scheduler.model_log_variance[t].item(), math.log(expected), rel_tol=1e-12)


@pytest.mark.parametrize("estimator", ["mean_squared_eps", "prediction_error"])
def test_estimate_converges_to_the_closed_form_mean_squared_eps_of_gaussian_data(estimator):
    s, T = 0.25, 100
    pipe = exact_pipeline("fixed_small", s=s, num_train_timesteps=T)
    exact = gaussian_mean_squared_eps(pipe.scheduler.alphas_cumprod, s)
    errors = {}
    for count in (25, 400):
        images = (torch.randn(count, 1, 4, 4, generator=torch.Generator().manual_seed(count)) * s).clamp(-1, 1)
        estimate = pipe.estimate_analytic_variance(
            images, generator=torch.Generator().manual_seed(0), batch_size=4096, estimator=estimator
        )
        # eps_hat is Gaussian with variance G_t per pixel, eps - eps_hat with variance 1 - G_t: their mean
        # squares are chi-square, relative std sqrt(2 / (M d)) of G_t, resp. of 1 - G_t
        scale = exact if estimator == "mean_squared_eps" else 1 - exact
        tolerance = 5 * math.sqrt(2 / (count * 16))
        assert ((estimate - exact).abs() / scale).max() < tolerance
        errors[count] = ((estimate - exact).abs() / scale).mean().item()
        assert pipe.scheduler.config.variance_type == "analytic"
        assert torch.equal(pipe.scheduler.analytic_mean_squared_eps, estimate)
        pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, variance_type="fixed_small")
    assert errors[400] < errors[25] / 2  # 1 / sqrt(M): a 4x smaller error expected


def test_prediction_error_estimate_resolves_one_minus_g_where_it_is_tiny():
    """At t = T, 1 - G_T = alpha_bar s^2 / (alpha_bar s^2 + 1 - alpha_bar) is 1e-5 of G_T: the mean of
    ||eps_hat||^2 / d cannot see it from 800 pixels (its error is ~5e-2); 1 - E||eps - eps_hat||^2 / d can."""
    pipe = exact_pipeline("fixed_small")
    exact = 1 - gaussian_mean_squared_eps(pipe.scheduler.alphas_cumprod, S)[-1].item()
    images = gaussian_images(50).float()
    errors = {}
    for estimator in ("mean_squared_eps", "prediction_error"):
        estimate = pipe.estimate_analytic_variance(
            images, generator=torch.Generator().manual_seed(0), batch_size=50_000, estimator=estimator
        )
        errors[estimator] = abs(1 - estimate[-1].item() - exact) / exact
    assert errors["prediction_error"] < 0.2 < 100 < errors["mean_squared_eps"], errors


def test_analytic_chain_samples_the_data_distribution_at_five_steps_where_fixed_variances_do_not():
    variances = {}
    for variance_type in ("analytic", "fixed_small", "fixed_large"):
        pipe = exact_pipeline(variance_type)
        images = pipe(
            batch_size=2000, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="pt"
        )
        x0 = images.images * 2 - 1  # back to [-1, 1]; N(0, 0.25) is clamped to [-1, 1] only at 2 sigma (4.6%)
        variances[variance_type] = x0.double().var().item()
    # The clamp to [-1, 1] of the output lowers the variance of N(0, s^2) to that of the clipped normal.
    clipped = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * S
    target = clipped.clamp(-1, 1).var().item()
    assert abs(variances["analytic"] - target) < 0.01 * target  # 32,000 values: relative std 0.8%
    assert variances["fixed_small"] < 0.3 * target  # fixed variances are wrong for a short chain
    assert variances["fixed_large"] > 1.5 * target


def test_analytic_bound_is_at_most_both_fixed_bounds_term_by_term():
    images = gaussian_images(512)
    terms = {}
    for variance_type in ("analytic", "fixed_small", "fixed_large"):
        pipe = exact_pipeline(variance_type)
        out = pipe.elbo(images, num_inference_steps=5, generator=torch.Generator().manual_seed(1))
        terms[variance_type] = torch.cat([out.denoising.mean(0), out.reconstruction.mean(0, keepdim=True)])
        assert out.denoising.shape == (512, 4)
    for fixed in ("fixed_small", "fixed_large"):
        assert (terms["analytic"] <= terms[fixed]).all(), (terms["analytic"], terms[fixed])
    assert terms["analytic"].sum() < 0.99 * terms["fixed_large"].sum()  # strictly better, not only equal


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range", "analytic"])
def test_chain_bound_at_every_step_is_the_full_bound(variance_type):
    config = {"analytic_mean_squared_eps": [0.9] * 10} if variance_type == "analytic" else {}
    pipe = tiny_pipeline(variance_type=variance_type, **config)
    images = torch.randint(0, 256, (3, 3, 8, 8), generator=torch.Generator().manual_seed(0)) / 127.5 - 1
    full = pipe.elbo(images, generator=torch.Generator().manual_seed(1))
    chain = pipe.elbo(images, num_inference_steps=10, generator=torch.Generator().manual_seed(1))
    for name in ("bits_per_dim", "prior", "denoising", "reconstruction"):
        torch.testing.assert_close(getattr(chain, name), getattr(full, name), rtol=1e-10, atol=0)


def test_optimal_timesteps_are_the_brute_force_minimum_of_the_step_costs():
    T, K = 12, 4
    table = np.random.default_rng(0).uniform(0, 1, T).tolist()
    for variance_type in ("analytic", "fixed_small", "fixed_large"):
        scheduler = SimpleDDPMScheduler(
            num_train_timesteps=T, beta_end=0.3, variance_type=variance_type, analytic_mean_squared_eps=table
        )
        costs = scheduler.step_costs()
        paths = [[T - 1, *sorted(inner, reverse=True), 0] for inner in itertools.combinations(range(1, T - 1), K - 2)]
        best = min(paths, key=lambda path: sum(costs[path[i + 1], path[i]] for i in range(K - 1)))  # noqa: B023
        assert scheduler.optimal_timesteps(K) == best
        scheduler.register_to_config(timestep_spacing="optimal")
        scheduler.set_timesteps(K)
        assert scheduler.timesteps.tolist() == best


def test_optimal_timesteps_never_give_a_larger_bound_than_even_spacing():
    """Non-Gaussian data (pixels uniform on {-0.5, 0.5}, within a bin of 2/255 of the grid), where the trajectory
    matters, with its exact G_t."""
    T = 200
    pipe = exact_pipeline("analytic", s=None, num_train_timesteps=T)
    table = two_point_mean_squared_eps(pipe.scheduler.alphas_cumprod)
    pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, analytic_mean_squared_eps=table.tolist())
    images = (torch.randint(0, 2, (256, 1, 4, 4), generator=torch.Generator().manual_seed(1)) * 127 + 64) / 127.5 - 1
    for variance_type, K in itertools.product(("analytic", "fixed_small", "fixed_large"), (3, 5, 10)):
        bounds = {}
        for spacing in ("linspace", "optimal"):
            config = pipe.scheduler.config
            pipe.scheduler = SimpleDDPMScheduler.from_config(
                config, timestep_spacing=spacing, variance_type=variance_type
            )
            out = pipe.elbo(images, num_inference_steps=K, generator=torch.Generator().manual_seed(2))
            bounds[spacing] = out.bits_per_dim.mean().item()
        assert bounds["optimal"] <= bounds["linspace"], (variance_type, K, bounds)


def test_the_table_survives_save_and_load_bit_for_bit_without_a_warning(tmp_path, capfd):
    table = np.random.default_rng(0).uniform(0, 1, 10)  # full float64 mantissas
    pipe = tiny_pipeline(variance_type="analytic", analytic_mean_squared_eps=table.tolist(), analytic_clip_pixels=1.0)
    pipe.save_pretrained(tmp_path)
    capfd.readouterr()
    loaded = SimpleDDPMPipeline.from_pretrained(tmp_path).scheduler
    assert "analytic_mean_squared_eps" not in capfd.readouterr().err  # the folder names DDPMScheduler, see hub.py
    assert loaded.config.analytic_mean_squared_eps == table.tolist()
    assert torch.equal(loaded.analytic_mean_squared_eps, torch.from_numpy(table))
    assert torch.equal(loaded.model_log_variance, pipe.scheduler.model_log_variance)
    assert loaded.config.analytic_clip_pixels == 1.0


def test_bad_analytic_configurations_fail_in_one_line():
    with pytest.raises(ValueError, match=r"needs analytic_mean_squared_eps.*estimate_analytic_variance"):
        SimpleDDPMScheduler(variance_type="analytic")
    with pytest.raises(ValueError, match="num_train_timesteps=10 finite numbers"):
        SimpleDDPMScheduler(num_train_timesteps=10, variance_type="analytic", analytic_mean_squared_eps=[0.5] * 9)
    with pytest.raises(ValueError, match="analytic_clip_pixels must be positive"):
        SimpleDDPMScheduler(analytic_clip_pixels=0)
    with pytest.raises(ValueError, match="optimal timesteps need analytic_mean_squared_eps"):
        SimpleDDPMScheduler(timestep_spacing="optimal").set_timesteps(10)
    learned = tiny_pipeline(variance_type="learned_range")
    with pytest.raises(ValueError, match="learns its own reverse variance"):
        learned.estimate_analytic_variance(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="optimal timesteps need a fixed or analytic variance"):
        SimpleDDPMScheduler(variance_type="learned_range", analytic_mean_squared_eps=[0.5] * 1000).optimal_timesteps(5)
    # a learned-variance network (2C outputs) under an analytic scheduler
    analytic = SimpleDDPMScheduler.from_config(
        learned.scheduler.config, variance_type="analytic", analytic_mean_squared_eps=[0.5] * 10
    )
    with pytest.raises(ValueError, match="needs variance_type 'learned_range' or 'learned', not 'analytic'"):
        SimpleDDPMPipeline(unet=learned.unet, scheduler=analytic)(num_inference_steps=2)
    with pytest.raises(ValueError, match="not both"):
        tiny_pipeline().elbo(torch.full((1, 3, 8, 8), -1.0), num_timesteps=2, num_inference_steps=2)
