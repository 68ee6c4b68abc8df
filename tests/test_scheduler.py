"""SimpleDDPMScheduler against closed forms, float64 second derivations, and diffusers' DDPMScheduler."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from ideal_denoiser import ideal_denoiser
from torch.distributions import Normal, kl_divergence

from simple_ddpm import SimpleDDPMScheduler
from simple_ddpm.variational_bound import discretized_gaussian_log_likelihood

T = 1000


def float64_noise(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gaussian_posterior(alpha_bar_s, alpha_bar_t, x0, x_t):
    """q(x_s | x_t, x_0) for s < t by Bayes' rule on the two Gaussians q(x_s | x_0) and q(x_t | x_s)."""
    prior_mean, prior_var = math.sqrt(alpha_bar_s) * x0, 1 - alpha_bar_s
    scale, step_var = math.sqrt(alpha_bar_t / alpha_bar_s), 1 - alpha_bar_t / alpha_bar_s
    var = 1 / (1 / prior_var + scale**2 / step_var)
    mean = var * (prior_mean / prior_var + scale * x_t / step_var)
    return mean, var


def bin_mass(x, mean, std):
    """P(X in the 8-bit bin of x) for X ~ N(mean, std^2), by math.erf; the edge bins reach to infinity."""
    cdf = lambda u: 0.5 * (1 + math.erf((u - mean) / (std * math.sqrt(2))))  # noqa: E731
    upper = 1.0 if x > 0.999 else cdf(x + 1 / 255)
    lower = 0.0 if x < -0.999 else cdf(x - 1 / 255)
    return upper - lower


# --- schedules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_betas_match_diffusers_for_every_named_schedule(schedule):
    ours = SimpleDDPMScheduler(beta_schedule=schedule, beta_end=0.012 if schedule == "scaled_linear" else 0.02)
    theirs = DDPMScheduler(beta_schedule=schedule, beta_end=0.012 if schedule == "scaled_linear" else 0.02)
    torch.testing.assert_close(ours.betas.float(), theirs.betas, rtol=1e-5, atol=1e-7)


def test_linear_schedule_is_the_papers():
    betas = SimpleDDPMScheduler().betas
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(betas.diff(), torch.full((T - 1,), (0.02 - 1e-4) / (T - 1), dtype=torch.float64))


def test_cosine_alias_gives_nichol_dhariwal_alpha_bar_and_stores_diffusers_name():
    scheduler = SimpleDDPMScheduler(beta_schedule="cosine")
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    t = np.arange(1, T + 1)
    f = lambda u: np.cos((u / T + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    expected = f(t) / f(0)
    uncapped = scheduler.betas.numpy() < 0.999
    np.testing.assert_allclose(scheduler.alphas_cumprod.numpy()[uncapped], expected[uncapped], rtol=1e-10)


def test_trained_betas_are_used_as_given():
    betas = np.linspace(0.001, 0.2, 10)
    scheduler = SimpleDDPMScheduler(num_train_timesteps=10, trained_betas=betas.tolist())
    np.testing.assert_array_equal(scheduler.betas.numpy(), betas)


# --- forward process and posterior ---------------------------------------------------------------------------


def test_closed_form_q_xt_matches_iterated_forward_process():
    scheduler = SimpleDDPMScheduler()
    # Moments of x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z, iterated from x_0: mean = m_t x_0, var = v_t.
    m, v = 1.0, 0.0
    means, variances = [], []
    for beta in scheduler.betas.tolist():
        m, v = math.sqrt(1 - beta) * m, (1 - beta) * v + beta
        means.append(m)
        variances.append(v)
    x0, noise = float64_noise(T, 3), float64_noise(T, 3, seed=1)
    x_t = scheduler.add_noise(x0, noise, torch.arange(T))
    means, variances = torch.tensor(means, dtype=torch.float64), torch.tensor(variances, dtype=torch.float64)
    expected = means[:, None] * x0 + variances.sqrt()[:, None] * noise
    torch.testing.assert_close(x_t, expected, rtol=1e-10, atol=1e-12)


def test_add_noise_matches_diffusers_in_float32():
    ours, theirs = SimpleDDPMScheduler(), DDPMScheduler()
    x0, noise = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    t = torch.randint(0, T, (8,))
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6)


def test_q_posterior_matches_bayes_rule():
    scheduler = SimpleDDPMScheduler(beta_schedule="squaredcos_cap_v2")
    t = torch.arange(1, T, 7)
    x0, x_t = float64_noise(len(t), 5), float64_noise(len(t), 5, seed=1)
    mean, variance = scheduler.q_posterior(x0, x_t, t)
    alpha_bar = scheduler.alphas_cumprod
    for i, step in enumerate(t.tolist()):
        expected_mean, expected_var = gaussian_posterior(
            alpha_bar[step - 1].item(), alpha_bar[step].item(), x0[i], x_t[i]
        )
        torch.testing.assert_close(mean[i], expected_mean, rtol=1e-9, atol=1e-10)
        assert variance[i, 0].item() == pytest.approx(expected_var, rel=1e-9)


def test_posterior_mean_in_x0_equals_posterior_mean_in_eps():
    scheduler = SimpleDDPMScheduler()
    t = torch.arange(1, T)
    x0, eps = float64_noise(T - 1, 4), float64_noise(T - 1, 4, seed=1)
    x_t = scheduler.add_noise(x0, eps, t)
    mean_from_x0, _ = scheduler.q_posterior(x0, x_t, t)
    beta, alpha, alpha_bar = (scheduler.betas[t, None], scheduler.alphas[t, None], scheduler.alphas_cumprod[t, None])
    mean_from_eps = (x_t - beta / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt()  # Ho et al. eq. 11
    torch.testing.assert_close(mean_from_x0, mean_from_eps, rtol=1e-9, atol=1e-9)


def test_prediction_conversions_recover_x0():
    x0, eps = float64_noise(50, 6), float64_noise(50, 6, seed=1)
    t = torch.randint(0, T, (50,))
    for prediction_type in ("epsilon", "sample", "v_prediction"):
        scheduler = SimpleDDPMScheduler(prediction_type=prediction_type)
        x_t = scheduler.add_noise(x0, eps, t)
        target = scheduler.get_target(x0, eps, t)
        torch.testing.assert_close(scheduler.predict_original_sample(target, x_t, t), x0, rtol=1e-8, atol=1e-8)


# --- loss weights -----------------------------------------------------------------------------------------------


def model_mean_by_design(scheduler, prediction, x_t, t):
    """mu_theta written from the papers for each design, independently of the scheduler's code path."""
    beta, alpha = scheduler.betas[t].item(), scheduler.alphas[t].item()
    alpha_bar, alpha_bar_prev = scheduler.alphas_cumprod[t].item(), scheduler.alphas_cumprod_prev[t].item()
    if scheduler.config.prediction_type == "epsilon":  # Ho et al. eq. 11
        return (x_t - beta / math.sqrt(1 - alpha_bar) * prediction) / math.sqrt(alpha)
    if scheduler.config.prediction_type == "v_prediction":
        x0_hat = math.sqrt(alpha_bar) * x_t - math.sqrt(1 - alpha_bar) * prediction
    else:
        x0_hat = prediction
    return gaussian_posterior(alpha_bar_prev, alpha_bar, x0_hat, x_t)[0]


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_elbo_weight_times_squared_error_equals_gaussian_kl(prediction_type, variance_type):
    scheduler = SimpleDDPMScheduler(prediction_type=prediction_type, variance_type=variance_type, clip_sample=False)
    dims = 16
    for seed, t in enumerate([1, 2, 10, 250, 600, 999]):
        x0, eps = float64_noise(dims, seed=seed), float64_noise(dims, seed=100 + seed)
        prediction = float64_noise(dims, seed=200 + seed)
        x_t = scheduler.add_noise(x0, eps, torch.tensor(t))
        alpha_bar, alpha_bar_prev = scheduler.alphas_cumprod[t].item(), scheduler.alphas_cumprod_prev[t].item()
        true_mean, true_var = gaussian_posterior(alpha_bar_prev, alpha_bar, x0, x_t)
        model_var = true_var if variance_type == "fixed_small" else scheduler.betas[t].item()
        model_mean = model_mean_by_design(scheduler, prediction, x_t, t)
        q = Normal(true_mean, math.sqrt(true_var))
        # The mean-dependent part of the KL; with fixed_small it is the whole KL.
        kl = kl_divergence(q, Normal(model_mean, math.sqrt(model_var))) - kl_divergence(
            q, Normal(true_mean, math.sqrt(model_var))
        )
        target = scheduler.get_target(x0, eps, torch.tensor(t))
        weight = scheduler.loss_weights(torch.tensor([t]), "elbo").double()
        loss = weight * ((prediction - target) ** 2).mean()
        assert loss.item() == pytest.approx(kl.mean().item(), rel=1e-5)


def test_elbo_weight_of_design_one_is_half_the_snr_difference():
    scheduler = SimpleDDPMScheduler(prediction_type="sample")
    t = torch.arange(1, T)
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    expected = 0.5 * (snr[t - 1] - snr[t])
    torch.testing.assert_close(scheduler.loss_weights(t, "elbo").double(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weight_is_min_snr_gamma_on_x0_error_for_every_design(prediction_type):
    gamma = 5.0
    scheduler = SimpleDDPMScheduler(prediction_type=prediction_type, clip_sample=False)
    t = torch.arange(T)
    x0, eps, x0_hat = float64_noise(T, 8), float64_noise(T, 8, seed=1), float64_noise(T, 8, seed=2)
    x_t = scheduler.add_noise(x0, eps, t)
    # the prediction of this design that corresponds to x0_hat at x_t
    a, b = scheduler.alphas_cumprod.sqrt()[:, None], (1 - scheduler.alphas_cumprod).sqrt()[:, None]
    eps_hat = (x_t - a * x0_hat) / b
    prediction = eps_hat if prediction_type == "epsilon" else a * eps_hat - b * x0_hat
    target = scheduler.get_target(x0, eps, t)
    ours = scheduler.loss_weights(t, "min_snr", snr_gamma=gamma).double() * ((prediction - target) ** 2).mean(1)
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    expected = snr.clamp(max=gamma) * ((x0_hat - x0) ** 2).mean(1)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize(("k", "gamma"), [(1.0, 1.0), (1.0, 0.5), (2.0, 1.5)])
def test_p2_weight_is_one_over_k_plus_snr_to_the_gamma_on_the_noise_error_for_every_design(prediction_type, k, gamma):
    """Choi et al. 2022 eq. 8: lambda_t / (k + SNR)^gamma with lambda_t = 1 on eps; the same loss for the x_0 or v a
    network predicts when its prediction corresponds to the same eps_hat at x_t (float64 from alpha_bar)."""
    scheduler = SimpleDDPMScheduler(prediction_type=prediction_type, clip_sample=False)
    t = torch.arange(T)
    x0, eps, x0_hat = float64_noise(T, 8), float64_noise(T, 8, seed=1), float64_noise(T, 8, seed=2)
    x_t = scheduler.add_noise(x0, eps, t)
    a, b = scheduler.alphas_cumprod.sqrt()[:, None], (1 - scheduler.alphas_cumprod).sqrt()[:, None]
    eps_hat = (x_t - a * x0_hat) / b
    prediction = {"epsilon": eps_hat, "sample": x0_hat, "v_prediction": a * eps_hat - b * x0_hat}[prediction_type]
    target = scheduler.get_target(x0, eps, t)
    weights = scheduler.loss_weights(t, "p2", p2_gamma=gamma, p2_k=k).double()
    ours = weights * ((prediction - target) ** 2).mean(1)
    alpha_bar = scheduler.alphas_cumprod
    expected = ((eps_hat - eps) ** 2).mean(1) / (k + alpha_bar / (1 - alpha_bar)) ** gamma
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-9)


def test_p2_at_k_1_gamma_1_downweights_the_clean_end_as_choi_et_al_describe():
    """1 / (1 + SNR): near 1 where the image is mostly noise, near SNR^-1 (tiny) at the first steps."""
    scheduler = SimpleDDPMScheduler()
    weights = scheduler.loss_weights(torch.tensor([0, T - 1]), "p2").double()
    snr = scheduler.alphas_cumprod[[0, T - 1]] / (1 - scheduler.alphas_cumprod[[0, T - 1]])
    torch.testing.assert_close(weights, 1 / (1 + snr), rtol=1e-6, atol=0)
    assert weights[0] < 1e-3 and weights[1] > 0.99


def test_simple_weight_is_one_and_unknown_weighting_is_refused():
    scheduler = SimpleDDPMScheduler()
    assert torch.equal(scheduler.loss_weights(torch.arange(5), "simple"), torch.ones(5))
    with pytest.raises(ValueError, match="'simple', 'elbo', 'min_snr'"):
        scheduler.loss_weights(torch.arange(5), "snr")


# --- bound terms ------------------------------------------------------------------------------------------------


def test_discretized_gaussian_sums_to_one_over_the_256_bins():
    grid = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, log_scale in [(0.0, -1.0), (0.93, -5.0), (-1.3, 0.5), (0.2, -9.0)]:
        mean, log_scale = torch.tensor(mean, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64)
        log_p = discretized_gaussian_log_likelihood(grid, mean, log_scale)
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_gaussian_matches_erf_integral_per_bin():
    std = 0.03
    for x_level, mean in [(0, -0.98), (17, -0.8), (128, 0.01), (254, 0.99), (255, 0.9)]:
        x = x_level / 127.5 - 1
        ours = discretized_gaussian_log_likelihood(
            *(torch.tensor(v, dtype=torch.float64) for v in (x, mean, math.log(std)))
        )
        assert ours.item() == pytest.approx(math.log(bin_mass(x, mean, std)), rel=1e-9)


def test_prior_term_is_closed_form_kl_to_standard_normal():
    scheduler = SimpleDDPMScheduler()
    x0 = float64_noise(3, 2, 4, 4).clamp(-1, 1)
    alpha_bar = scheduler.alphas_cumprod[-1].item()
    per_dim = 0.5 * (alpha_bar * x0**2 + (1 - alpha_bar) - 1 - math.log(1 - alpha_bar))
    expected = per_dim.flatten(1).mean(1) / math.log(2)
    torch.testing.assert_close(scheduler.prior_bpd(x0), expected, rtol=1e-9, atol=1e-15)


def test_vb_term_is_kl_for_t_above_one_and_decoder_nll_at_one():
    scheduler = SimpleDDPMScheduler(clip_sample=False)
    x0 = (torch.randint(0, 256, (2, 1, 2, 2)).double() / 127.5) - 1
    eps, model_eps = float64_noise(2, 1, 2, 2, seed=1), float64_noise(2, 1, 2, 2, seed=2)
    t = torch.tensor([0, 500])
    x_t = scheduler.add_noise(x0, eps, t)
    bits = scheduler.vb_terms_bpd(model_eps, x0, x_t, t)
    # t = 500: KL between the true posterior and the model's Gaussian (equal variances)
    true_mean, true_var = gaussian_posterior(
        scheduler.alphas_cumprod[499].item(), scheduler.alphas_cumprod[500].item(), x0[1], x_t[1]
    )
    model_mean = model_mean_by_design(scheduler, model_eps[1], x_t[1], 500)
    kl = kl_divergence(Normal(true_mean, math.sqrt(true_var)), Normal(model_mean, math.sqrt(true_var)))
    assert bits[1].item() == pytest.approx(kl.mean().item() / math.log(2), rel=1e-9)
    # t = 0 (the paper's t = 1): -log of the Gaussian mass of x_0's bin, model variance sigma^2(2)
    mean = model_mean_by_design(scheduler, model_eps[0], x_t[0], 0)
    std = math.sqrt(scheduler.posterior_variance[1].item())
    nll = 0.0
    for x, m in zip(x0[0].flatten().tolist(), mean.flatten().tolist(), strict=True):
        nll -= math.log(bin_mass(x, m, std))
    assert bits[0].item() == pytest.approx(nll / 4 / math.log(2), rel=1e-6)


# --- sampling -------------------------------------------------------------------------------------------------


def float64_ancestral_sampling(x_T, steps, alpha_bar, generator, clip=True, fixed_large=False):
    """Algorithm 2 of Ho et al. on the respaced chain, in float64, with the ideal denoiser as the network."""
    x = x_T.double()
    for i, t in enumerate(steps):
        alpha_bar_t = alpha_bar[t].item()
        alpha_bar_s = alpha_bar[steps[i + 1]].item() if i + 1 < len(steps) else 1.0
        x0_hat = 0.5 * torch.tanh(0.5 * math.sqrt(alpha_bar_t) * x / (1 - alpha_bar_t))
        x0_hat = x0_hat.clamp(-1, 1) if clip else x0_hat
        if i + 1 == len(steps):  # the last step returns the posterior mean at s = 0, which is x0_hat
            return x0_hat
        mean, var = gaussian_posterior(alpha_bar_s, alpha_bar_t, x0_hat, x)
        if fixed_large:
            var = 1 - alpha_bar_t / alpha_bar_s
        x = mean + math.sqrt(var) * torch.randn(x.shape, generator=generator).double()


@pytest.mark.parametrize(
    "config,num_steps",
    [
        (dict(prediction_type="epsilon"), 1000),
        (dict(prediction_type="sample"), 1000),
        (dict(prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2"), 1000),
        (dict(prediction_type="epsilon", variance_type="fixed_large", timestep_spacing="linspace"), 50),
        (dict(prediction_type="epsilon", timestep_spacing="trailing", clip_sample=False), 30),
    ],
)
def test_sampling_loop_matches_float64_oracle_and_diffusers_ddpm(config, num_steps):
    ours, theirs = SimpleDDPMScheduler(**config), DDPMScheduler(**config)
    ours.set_timesteps(num_steps)
    theirs.set_timesteps(num_steps)
    steps = ours.timesteps.tolist()
    assert steps == theirs.timesteps.tolist()
    x_ours = x_theirs = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    g_ours, g_theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for t in steps:
        x_ours = ours.step(
            ideal_denoiser(x_ours, t, ours.alphas_cumprod, ours.config.prediction_type), t, x_ours, generator=g_ours
        ).prev_sample
        x_theirs = theirs.step(
            ideal_denoiser(x_theirs, t, ours.alphas_cumprod, ours.config.prediction_type),
            t,
            x_theirs,
            generator=g_theirs,
        ).prev_sample
    exact = float64_ancestral_sampling(
        torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
        steps,
        ours.alphas_cumprod,
        torch.Generator().manual_seed(1),
        clip=config.get("clip_sample", True),
        fixed_large=config.get("variance_type") == "fixed_large",
    )
    torch.testing.assert_close(x_ours.double(), exact, rtol=0, atol=1e-5)
    # diffusers rounds its coefficients to float32: 1e-5 over 1000 steps, up to 3e-5 on respaced chains
    torch.testing.assert_close(x_ours, x_theirs, rtol=0, atol=1e-5 if num_steps == 1000 else 5e-5)


@pytest.mark.parametrize("num_steps", [1000, 37])
def test_step_gives_same_prev_sample_for_consistent_predictions_of_each_design(num_steps):
    x0 = float64_noise(2, 3, 4, 4).clamp(-1, 1)
    eps = float64_noise(2, 3, 4, 4, seed=1)
    prev = {}
    for prediction_type in ("epsilon", "sample", "v_prediction"):
        scheduler = SimpleDDPMScheduler(prediction_type=prediction_type)
        scheduler.set_timesteps(num_steps)
        t = scheduler.timesteps[3].item()
        x_t = scheduler.add_noise(x0, eps, torch.tensor(t))
        output = scheduler.get_target(x0, eps, torch.tensor(t))
        out = scheduler.step(output, t, x_t, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(out.pred_original_sample, x0, rtol=1e-9, atol=1e-9)
        prev[prediction_type] = out.prev_sample
    torch.testing.assert_close(prev["epsilon"], prev["sample"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(prev["v_prediction"], prev["sample"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_respaced_step_draws_from_exact_posterior_of_original_process(variance_type):
    scheduler = SimpleDDPMScheduler(prediction_type="sample", variance_type=variance_type)
    scheduler.set_timesteps(20)
    steps = scheduler.timesteps.tolist()
    x0, x_t = float64_noise(3, 5).clamp(-1, 1), float64_noise(3, 5, seed=1)
    alpha_bar = scheduler.alphas_cumprod
    for i, t in enumerate(steps):
        s = steps[i + 1] if i + 1 < len(steps) else None
        alpha_bar_s = alpha_bar[s].item() if s is not None else 1.0
        out = scheduler.step(x0, t, x_t, generator=torch.Generator().manual_seed(i)).prev_sample
        z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        if s is None:  # last step: no noise, the posterior mean is x_0
            torch.testing.assert_close(out, x0, rtol=1e-9, atol=1e-9)
            continue
        mean, var = gaussian_posterior(alpha_bar_s, alpha_bar[t].item(), x0, x_t)
        if variance_type == "fixed_large":
            var = 1 - alpha_bar[t].item() / alpha_bar_s  # beta' of the respaced process
        torch.testing.assert_close(out, mean + math.sqrt(var) * z, rtol=1e-9, atol=1e-9)


def test_linspace_spacing_is_evenly_spaced_from_last_to_first_step():
    scheduler = SimpleDDPMScheduler()
    scheduler.set_timesteps(50)
    steps = scheduler.timesteps.numpy()
    assert steps[0] == T - 1 and steps[-1] == 0 and len(steps) == 50
    np.testing.assert_allclose(steps, np.linspace(T - 1, 0, 50), atol=0.5)
    scheduler.set_timesteps(1000)
    assert scheduler.timesteps.tolist() == list(range(T - 1, -1, -1))


def test_step_clips_x0_and_adds_no_noise_at_last_step():
    scheduler = SimpleDDPMScheduler(prediction_type="sample", clip_sample_range=0.5)
    scheduler.set_timesteps(10)
    x = torch.zeros(1, 1, 2, 2)
    out = scheduler.step(torch.full_like(x, 3.0), 0, x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.pred_original_sample, torch.full_like(x, 0.5))
    assert torch.equal(out.prev_sample, torch.full_like(x, 0.5))  # at t = 0 the mean is x0_hat, no noise


# --- drop-in for DDPMScheduler ------------------------------------------------------------------------------------
# The deterministic inputs and toy network of diffusers' scheduler tests (tests/schedulers/test_schedulers.py), whose
# full-loop figures diffusers publishes: x_0 = 0, 1/768, ..., 767/768 laid out channel-last, the noise the same
# values reversed, and a "network" that outputs x * t / (t + 1).


def diffusers_test_sample(reverse=False):
    values = torch.arange(4 * 3 * 8 * 8)
    values = values.flip(0) if reverse else values
    return (values.reshape(3, 8, 8, 4) / values.numel()).permute(3, 0, 1, 2)


def toy_network(x, t):
    return x * t / (t + 1)


def run_chain(scheduler, x, timesteps, generator):
    for t in timesteps:
        x = scheduler.step(toy_network(x, t), t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize(
    "prediction_type,published_sum,published_mean",
    [("epsilon", 258.9606, 0.3372), ("v_prediction", 202.0296, 0.2631)],
)
def test_step_before_set_timesteps_walks_the_full_chain_and_gives_diffusers_published_figures(
    prediction_type, published_sum, published_mean
):
    ours, theirs = SimpleDDPMScheduler(prediction_type=prediction_type), DDPMScheduler(prediction_type=prediction_type)
    chain = range(T - 1, -1, -1)  # no set_timesteps: both walk every step
    x_ours = run_chain(ours, diffusers_test_sample(), chain, torch.Generator().manual_seed(0))
    x_theirs = run_chain(theirs, diffusers_test_sample(), chain, torch.Generator().manual_seed(0))
    assert abs(x_ours.abs().sum().item() - published_sum) < 1e-2
    assert abs(x_ours.abs().mean().item() - published_mean) < 1e-3
    torch.testing.assert_close(x_ours, x_theirs, rtol=0, atol=1e-4)
    # and it is the chain that set_timesteps(T) gives
    explicit = SimpleDDPMScheduler(prediction_type=prediction_type)
    explicit.set_timesteps(T)
    x_explicit = run_chain(explicit, diffusers_test_sample(), chain, torch.Generator().manual_seed(0))
    assert torch.equal(x_ours, x_explicit)


def test_noisy_restart_loop_agrees_with_float64_oracle_where_diffusers_figure_is_off_by_2e2():
    """diffusers' test_full_loop_with_noise: x_1 = add_noise(x_0, noise, t=1), then steps t = 1 and t = 0."""
    ours = SimpleDDPMScheduler()
    sample, noise = diffusers_test_sample(), diffusers_test_sample(reverse=True)
    chain = ours.timesteps[T - 2 :]
    x_ours = run_chain(ours, ours.add_noise(sample, noise, chain[:1]), chain, torch.Generator().manual_seed(0))

    # The same two steps in float64 from the paper's formulas, with alpha_bar from numpy.
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, T, dtype=np.float64))
    x = math.sqrt(alpha_bar[1]) * sample.double() + math.sqrt(1 - alpha_bar[1]) * noise.double()
    eps_hat = toy_network(x, 1)
    x0_hat = ((x - math.sqrt(1 - alpha_bar[1]) * eps_hat) / math.sqrt(alpha_bar[1])).clamp(-1, 1)
    mean, var = gaussian_posterior(alpha_bar[0], alpha_bar[1], x0_hat, x)
    x = mean + math.sqrt(var) * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).double()
    exact = (x / math.sqrt(alpha_bar[0])).clamp(-1, 1)  # t = 0: eps_hat = 0 and the output is x0_hat

    torch.testing.assert_close(x_ours.double(), exact, rtol=0, atol=1e-6)
    exact_sum = exact.abs().sum().item()
    assert abs(x_ours.abs().sum().item() - exact_sum) < 1e-3
    # diffusers publishes 387.9466: its float32 alpha_bar leaves 1 - alpha_bar_2 (about 2.2e-4) with a relative
    # error of about 3e-4, which the two steps carry into the sum. With its table in float64 it agrees.
    assert abs(387.9466 - exact_sum) > 1.5e-2
    theirs = DDPMScheduler()
    x_theirs = run_chain(theirs, theirs.add_noise(sample, noise, chain[:1]), chain, torch.Generator().manual_seed(0))
    assert abs(x_theirs.abs().sum().item() - 387.9466) < 1e-3
    theirs.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)
    x_theirs = run_chain(theirs, ours.add_noise(sample, noise, chain[:1]), chain, torch.Generator().manual_seed(0))
    assert abs(x_theirs.abs().sum().item() - exact_sum) < 1e-3


def test_previous_timestep_returns_what_diffusers_returns():
    ours, theirs = SimpleDDPMScheduler(), DDPMScheduler(timestep_spacing="linspace")
    for configure in (
        lambda s: None,  # before set_timesteps: t - 1, an int for an int and a tensor for a tensor
        lambda s: s.set_timesteps(10),
        lambda s: s.set_timesteps(timesteps=[500, 87, 50, 1, 0]),
    ):
        configure(ours)
        configure(theirs)
        assert ours.timesteps.tolist() == theirs.timesteps.tolist()
        for t in [*ours.timesteps, *ours.timesteps.tolist()]:  # as tensors and as ints
            mine, expected = ours.previous_timestep(t), theirs.previous_timestep(t)
            assert type(mine) is type(expected) and int(mine) == int(expected)
            if torch.is_tensor(expected):
                assert (mine.dtype, mine.shape) == (expected.dtype, expected.shape)


def test_dynamic_threshold_is_the_percentile_rule_of_saharia_et_al():
    x0_hat = 3 * float64_noise(5, 3, 4, 4)
    x0_hat[0] *= 0.1  # an image whose percentile is below 1: plain clipping to [-1, 1]
    for ratio, max_value in [(0.995, 1.0), (0.9, 2.0), (0.5, 10.0), (0.995, 0.5)]:
        scheduler = SimpleDDPMScheduler(
            thresholding=True, dynamic_thresholding_ratio=ratio, sample_max_value=max_value
        )
        ours = scheduler.dynamic_threshold(x0_hat)
        for image, result in zip(x0_hat.numpy(), ours.numpy(), strict=True):
            s = np.quantile(np.abs(image), ratio)  # linear interpolation, as torch.quantile
            s = max_value if max_value < 1 else min(max(s, 1.0), max_value)  # torch.clamp(s, 1, max): max wins
            np.testing.assert_allclose(result, np.clip(image, -s, s) / s, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("sample_max_value", [0.5, 1.0, 2.0])
def test_thresholded_sampling_matches_diffusers(prediction_type, sample_max_value):
    config = dict(thresholding=True, prediction_type=prediction_type, sample_max_value=sample_max_value)
    ours, theirs = SimpleDDPMScheduler(**config), DDPMScheduler(**config, timestep_spacing="linspace")
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    x_ours = x_theirs = 2 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    g_ours, g_theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for i, t in enumerate(ours.timesteps.tolist()):
        output = 2 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(10 + i))
        out_ours = ours.step(output, t, x_ours, generator=g_ours)
        out_theirs = theirs.step(output, t, x_theirs, generator=g_theirs)
        # x0_hat in [-1, 1]; diffusers' float32 1 / sqrt(alpha_bar_t), up to 150 here, sets the tolerance
        torch.testing.assert_close(out_ours.pred_original_sample, out_theirs.pred_original_sample, rtol=0, atol=1e-4)
        x_ours, x_theirs = out_ours.prev_sample, out_theirs.prev_sample
        torch.testing.assert_close(x_ours, x_theirs, rtol=0, atol=1e-4)


def test_bound_under_thresholding_is_the_kl_to_the_thresholded_mean_that_step_samples():
    scheduler = SimpleDDPMScheduler(thresholding=True, prediction_type="sample", sample_max_value=3.0)
    x0 = float64_noise(1, 3, 4, 4).clamp(-1, 1)
    model_x0 = 4 * float64_noise(1, 3, 4, 4, seed=1)
    t = 500
    x_t = scheduler.add_noise(x0, float64_noise(1, 3, 4, 4, seed=2), torch.tensor([t]))
    # the thresholded x0_hat, by the percentile rule in numpy
    s = min(max(np.quantile(np.abs(model_x0.numpy()), 0.995), 1.0), 3.0)
    x0_hat = torch.from_numpy(np.clip(model_x0.numpy(), -s, s) / s)
    alpha_bar_prev, alpha_bar = scheduler.alphas_cumprod[t - 1].item(), scheduler.alphas_cumprod[t].item()
    true_mean, var = gaussian_posterior(alpha_bar_prev, alpha_bar, x0, x_t)
    model_mean, _ = gaussian_posterior(alpha_bar_prev, alpha_bar, x0_hat, x_t)
    kl = kl_divergence(Normal(true_mean, math.sqrt(var)), Normal(model_mean, math.sqrt(var)))
    bits = scheduler.vb_terms_bpd(model_x0, x0, x_t, torch.tensor([t]))
    assert bits.item() == pytest.approx(kl.mean().item() / math.log(2), rel=1e-9)
    # step uses the same x0_hat
    step_x0_hat = scheduler.step(model_x0, t, x_t, generator=torch.Generator().manual_seed(0)).pred_original_sample
    torch.testing.assert_close(step_x0_hat, x0_hat, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_zero_terminal_snr_rescaling_is_lin_et_al_algorithm_1_and_matches_diffusers(schedule):
    plain = SimpleDDPMScheduler(beta_schedule=schedule)
    rescaled = SimpleDDPMScheduler(beta_schedule=schedule, rescale_betas_zero_snr=True)
    # Algorithm 1: sqrt(alpha_bar) shifted to end at 0 and scaled to keep its first value.
    root = plain.alphas_cumprod.sqrt()
    expected = (root - root[-1]) * root[0] / (root[0] - root[-1])
    torch.testing.assert_close(rescaled.alphas_cumprod.sqrt(), expected, rtol=1e-9, atol=1e-12)
    assert rescaled.alphas_cumprod[-1].item() == 0 and rescaled.betas[-1].item() == 1
    assert rescaled.betas[0].item() == pytest.approx(plain.betas[0].item(), rel=1e-12)
    theirs = DDPMScheduler(beta_schedule=schedule, rescale_betas_zero_snr=True)
    torch.testing.assert_close(rescaled.betas.float(), theirs.betas, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_sampling_under_zero_terminal_snr_matches_diffusers(prediction_type):
    # for epsilon, x0_hat at t = T is (x_T - eps_hat) / 0 = +-inf in both, clipped to +-1
    config = dict(rescale_betas_zero_snr=True, prediction_type=prediction_type, timestep_spacing="trailing")
    ours, theirs = SimpleDDPMScheduler(**config), DDPMScheduler(**config)
    ours.set_timesteps(20)
    theirs.set_timesteps(20)
    assert ours.timesteps[0].item() == T - 1
    x_ours = x_theirs = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    g_ours, g_theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for t in ours.timesteps.tolist():
        x_ours = ours.step(0.5 * x_ours, t, x_ours, generator=g_ours).prev_sample
        x_theirs = theirs.step(0.5 * x_theirs, t, x_theirs, generator=g_theirs).prev_sample
    assert torch.isfinite(x_ours).all()
    torch.testing.assert_close(x_ours, x_theirs, rtol=0, atol=1e-4)


def test_bound_under_zero_terminal_snr_has_no_prior_term_and_a_last_term_against_q_of_x_T_minus_1():
    scheduler = SimpleDDPMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction", clip_sample=False)
    x0 = float64_noise(2, 3, 4, 4).clamp(-1, 1)
    assert torch.equal(scheduler.prior_bpd(x0), torch.zeros(2, dtype=torch.float64))  # q(x_T | x_0) = N(0, I)
    t = torch.tensor([T - 1, T - 1])
    x_t, v_hat = float64_noise(2, 3, 4, 4, seed=1), float64_noise(2, 3, 4, 4, seed=2)
    # alpha_T = 0: x_T carries nothing of x_{T-1}, so q(x_{T-1} | x_T, x_0) = q(x_{T-1} | x_0); x0_hat = -v_hat
    alpha_bar_prev = scheduler.alphas_cumprod[-2].item()
    q = Normal(math.sqrt(alpha_bar_prev) * x0, math.sqrt(1 - alpha_bar_prev))
    p = Normal(math.sqrt(alpha_bar_prev) * -v_hat, math.sqrt(1 - alpha_bar_prev))
    expected = kl_divergence(q, p).flatten(1).mean(1) / math.log(2)
    torch.testing.assert_close(scheduler.vb_terms_bpd(v_hat, x0, x_t, t), expected, rtol=1e-6, atol=0)


def test_bound_for_epsilon_under_zero_terminal_snr_is_refused_with_the_reason():
    scheduler = SimpleDDPMScheduler(rescale_betas_zero_snr=True)
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="undefined for prediction_type='epsilon'.*divides by 0"):
        scheduler.vb_terms_bpd(x, x, x, torch.tensor([0]))
    with pytest.raises(ValueError, match="undefined for prediction_type='epsilon'"):
        scheduler.loss_weights(torch.tensor([5]), "elbo")
    # Min-SNR's weight min(SNR, gamma) / SNR takes its limit 1 at SNR = 0
    weights = scheduler.loss_weights(torch.tensor([0, T - 1]), "min_snr")
    assert weights[1].item() == 1.0 and torch.isfinite(weights).all()


def test_thresholding_and_zero_snr_configs_convert_both_ways():
    keys = dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5, rescale_betas_zero_snr=True)
    ours = SimpleDDPMScheduler.from_config(DDPMScheduler(prediction_type="v_prediction", **keys).config)
    assert {k: ours.config[k] for k in keys} == keys
    assert ours.alphas_cumprod[-1].item() == 0
    back = DDPMScheduler.from_config(SimpleDDPMScheduler(**keys).config)
    assert {k: back.config[k] for k in keys} == keys


def test_last_step_above_zero_adds_no_noise_where_diffusers_adds_some():
    config = dict(timestep_spacing="trailing", variance_type="fixed_large", prediction_type="sample")
    ours, theirs = SimpleDDPMScheduler(**config), DDPMScheduler(**config)
    ours.set_timesteps(20)
    theirs.set_timesteps(20)
    last = ours.timesteps[-1].item()
    assert last == theirs.timesteps[-1].item() == 49
    x_t, x0 = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4) - 0.5
    # the last step goes to x_0 itself: the posterior mean at alpha_bar = 1 is x0_hat, and Algorithm 2 adds no noise
    assert torch.equal(ours.step(x0, last, x_t, generator=torch.Generator().manual_seed(0)).prev_sample, x0)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    noisy = theirs.step(x0, last, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
    std = math.sqrt(1 - ours.alphas_cumprod[last].item())  # diffusers' beta' of the last step, 1 - alpha_bar_t
    torch.testing.assert_close(noisy, x0 + std * z, rtol=0, atol=1e-5)


def test_private_helpers_of_ddpm_scheduler_are_refused_with_what_to_use():
    with pytest.raises(AttributeError, match="private helper of diffusers' DDPMScheduler.*p_mean_variance"):
        SimpleDDPMScheduler()._get_variance(487)
    with pytest.raises(AttributeError, match="dynamic_threshold"):
        SimpleDDPMScheduler()._threshold_sample(torch.zeros(1, 1, 2, 2))


# --- configuration ----------------------------------------------------------------------------------------------


def test_config_round_trips_through_save_pretrained(tmp_path):
    scheduler = SimpleDDPMScheduler(beta_schedule="sigmoid", prediction_type="v_prediction", clip_sample=False)
    scheduler.save_pretrained(tmp_path)
    loaded = SimpleDDPMScheduler.from_pretrained(tmp_path)
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in scheduler.config.items() if not k.startswith("_")
    }
    assert torch.equal(loaded.alphas_cumprod, scheduler.alphas_cumprod)


def test_config_interoperates_with_diffusers_both_ways():
    theirs = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False)
    ours = SimpleDDPMScheduler.from_config(theirs.config)
    assert (ours.config.beta_schedule, ours.config.prediction_type, ours.config.clip_sample) == (
        "squaredcos_cap_v2",
        "v_prediction",
        False,
    )
    back = DDPMScheduler.from_config(SimpleDDPMScheduler(beta_schedule="cosine", variance_type="fixed_large").config)
    assert back.config.beta_schedule == "squaredcos_cap_v2" and back.config.variance_type == "fixed_large"
    torch.testing.assert_close(back.alphas_cumprod, SimpleDDPMScheduler(beta_schedule="cosine").alphas_cumprod.float())


def test_loads_scheduler_config_saved_by_google_ddpm(tmp_path):
    # scheduler_config.json as in google/ddpm-cifar10-32 (diffusers 0.x), keys and values verbatim
    config = {
        "_class_name": "DDPMScheduler",
        "_diffusers_version": "0.1.1",
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "clip_sample": True,
        "num_train_timesteps": 1000,
        "trained_betas": None,
        "variance_type": "fixed_small",
    }
    (tmp_path / "scheduler_config.json").write_text(json.dumps(config))
    ours = SimpleDDPMScheduler.from_pretrained(tmp_path)
    theirs = DDPMScheduler.from_pretrained(tmp_path)
    assert ours.config.prediction_type == "epsilon" and ours.config.clip_sample
    torch.testing.assert_close(ours.alphas_cumprod.float(), theirs.alphas_cumprod)


# --- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(beta_schedule="exponential"), "'linear', 'scaled_linear', 'squaredcos_cap_v2', 'cosine', 'sigmoid'"),
        (dict(prediction_type="noise"), "'epsilon', 'sample', 'v_prediction'"),
        (dict(variance_type="fixed_small_log"), "'fixed_small', 'fixed_large', 'learned_range', 'learned'"),
        (dict(timestep_spacing="uniform"), "'linspace', 'leading', 'trailing'"),
        (dict(beta_start=0.02, beta_end=0.02), "beta_end .* must be greater than beta_start"),
        (dict(num_train_timesteps=4, trained_betas=[0.1, 0.2, 1.0, 0.3]), r"Every beta must lie in \(0, 1\)"),
        (dict(num_train_timesteps=3, trained_betas=[0.1, -0.2, 0.3]), r"Every beta must lie in \(0, 1\)"),
        (dict(num_train_timesteps=3, trained_betas=[0.1, 0.2]), "num_train_timesteps=3"),
        (dict(variance_type="other"), "'fixed_small', 'fixed_large'"),
        (dict(beta_start=0.1, beta_end=2), r"Every beta must lie in \(0, 1\): beta_t is the variance"),
        (dict(num_train_timesteps=1), "at least 2, got 1: the decoder's variance at t = 1 is sigma\\^2\\(2\\)"),
        (dict(num_train_timesteps=1, trained_betas=[0.1]), "at least 2"),
        (dict(num_train_timesteps=3, trained_betas=[0.1, 0.2]), "one beta per forward step"),
        (dict(thresholding=True, dynamic_thresholding_ratio=1.5), r"dynamic_thresholding_ratio must lie in \[0, 1\]"),
        (dict(thresholding=True, sample_max_value=0.0), "sample_max_value must be positive"),
    ],
)
def test_bad_configuration_is_refused_with_the_valid_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimpleDDPMScheduler(**kwargs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(num_inference_steps=0), r"integer in \[1, 1000\]"),
        (dict(num_inference_steps=1001), r"integer in \[1, 1000\]"),
        (dict(timesteps=[10, 500, 0]), "strictly decreasing"),
        (dict(timesteps=[500, 500, 0]), "strictly decreasing"),
        (dict(timesteps=[1000, 10]), r"\[0, 999\]"),
        (dict(timesteps=[10, -1]), r"\[0, 999\]"),
        (dict(), "exactly one"),
    ],
)
def test_bad_set_timesteps_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimpleDDPMScheduler().set_timesteps(**kwargs)


def test_step_with_mismatched_shapes_or_foreign_timestep_is_refused():
    scheduler = SimpleDDPMScheduler()
    scheduler.set_timesteps(10)
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="model_output has shape"):
        scheduler.step(torch.zeros(1, 3, 4, 5), 999, x)
    with pytest.raises(ValueError, match="needs a model output of 3 channels, as many as the sample's, got 6"):
        scheduler.step(torch.zeros(1, 6, 4, 4), 999, x)
    with pytest.raises(ValueError, match="timestep 998 is not in the current schedule"):
        scheduler.step(x, 998, x)
