"""The training objective (simple_ddpm.training_losses) and the timestep samplers (simple_ddpm.timestep_samplers):
the stop-gradient of L_hybrid, L_vlb's scale, the importance sampler's distribution and its unbiasedness."""

import math

import numpy as np
import pytest
import torch

from simple_ddpm import (
    LossSecondMomentSampler,
    SimpleDDPMScheduler,
    UniformSampler,
    create_timestep_sampler,
    training_losses,
)

C = 2


def batch(variance_type: str, seed: int = 0, T: int = 50):
    scheduler = SimpleDDPMScheduler(num_train_timesteps=T, variance_type=variance_type)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(4, C, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(4, C, 4, 4, generator=g)
    timesteps = torch.tensor([0, 1, 17, T - 1])
    noisy = scheduler.add_noise(x0, noise, timesteps)
    channels = 2 * C if scheduler.learns_variance else C
    output = (0.5 * torch.randn(4, channels, 4, 4, generator=g)).requires_grad_()
    return scheduler, output, x0, noisy, noise, timesteps


def gradient(loss: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss.sum(), output, retain_graph=True)
    return grad


# --- L_hybrid and L_vlb -----------------------------------------------------------------------------------------


def test_vlb_in_the_hybrid_loss_trains_the_variance_channels_and_not_the_mean_channels():
    scheduler, output, x0, noisy, noise, t = batch("learned_range")
    losses = training_losses(scheduler, output, x0, noisy, noise, t, vlb_weight=0.001)

    vlb_grad = gradient(losses.vlb, output)
    assert torch.all(vlb_grad[:, :C] == 0)  # the stop-gradient on the mean
    assert torch.all(vlb_grad[:, C:].flatten(1).abs().sum(1) > 0)  # every image's variance gets a gradient
    # the mean channels get exactly the MSE's gradient, the variance channels exactly lambda * L_vlb's
    total = gradient(losses.loss, output)
    torch.testing.assert_close(total[:, :C], gradient(losses.mse, output)[:, :C], rtol=0, atol=0)
    torch.testing.assert_close(total[:, C:], 0.001 * vlb_grad[:, C:], rtol=1e-4, atol=1e-9)  # float32


def test_pure_vlb_loss_trains_mean_and_variance_channels():
    scheduler, output, x0, noisy, noise, t = batch("learned_range")
    losses = training_losses(scheduler, output, x0, noisy, noise, t, loss_type="vlb")
    grad = gradient(losses.loss, output)
    assert losses.mse is None and grad[:, :C].abs().sum() > 0 and grad[:, C:].abs().sum() > 0


def test_vlb_is_T_times_the_bounds_term_at_t_without_clipping_and_the_hybrid_adds_lambda_of_it():
    scheduler, output, x0, noisy, noise, t = batch("learned", T=50)
    losses = training_losses(scheduler, output, x0, noisy, noise, t, vlb_weight=0.25)
    term = scheduler.vb_terms_bpd(output.detach().double(), x0.double(), noisy.double(), t, clip_sample=False)
    torch.testing.assert_close(losses.vlb.detach().double(), 50 * term, rtol=1e-5, atol=1e-6)
    target_mse = (output[:, :C].detach() - noise).pow(2).flatten(1).mean(1)  # epsilon prediction, "simple"
    torch.testing.assert_close(losses.loss.detach(), target_mse + 0.25 * losses.vlb.detach(), rtol=1e-6, atol=0)


def test_vlb_with_a_fixed_variance_is_the_elbo_weighted_mse_away_from_t_equals_one():
    # With a fixed variance, the KL term is the "elbo"-weighted MSE of Ho et al.'s eq. 12 (a second derivation).
    scheduler, output, x0, noisy, noise, t = batch("fixed_small", T=50)
    output = output.detach()
    vlb = training_losses(scheduler, output, x0, noisy, noise, t, loss_type="vlb").vlb
    elbo_mse = training_losses(scheduler, output, x0, noisy, noise, t, loss_weighting="elbo").mse
    torch.testing.assert_close(vlb[1:], 50 * elbo_mse[1:] / math.log(2), rtol=1e-4, atol=1e-6)


def test_fixed_variance_hybrid_is_the_mse_alone():
    scheduler, output, x0, noisy, noise, t = batch("fixed_small")
    losses = training_losses(scheduler, output, x0, noisy, noise, t)
    assert losses.vlb is None and torch.equal(losses.loss, losses.mse)


def test_bad_loss_options_are_one_line_with_the_valid_values():
    scheduler, output, x0, noisy, noise, t = batch("learned_range")
    with pytest.raises(ValueError, match="Unknown loss_type 'kl'; valid values are: 'mse', 'vlb'"):
        training_losses(scheduler, output, x0, noisy, noise, t, loss_type="kl")
    with pytest.raises(ValueError, match="needs a model output of 4 channels"):
        training_losses(scheduler, output[:, :C], x0, noisy, noise, t)


# --- timestep samplers ------------------------------------------------------------------------------------------


def warmed_sampler(T: int = 20, seed: int = 0, extra: int = 3) -> tuple[LossSecondMomentSampler, list[list[float]]]:
    """A sampler fed 10 + `extra` losses per timestep, of sizes that differ by t, and the losses per t in order."""
    sampler = LossSecondMomentSampler(T)
    rng = np.random.default_rng(seed)
    fed = [[] for _ in range(T)]
    for _ in range(10 + extra):
        t = torch.from_numpy(rng.permutation(T))
        losses = torch.from_numpy(rng.exponential(1.0, T) * (1 + t.numpy()) ** 1.5)
        sampler.update_with_losses(t, losses)
        for ti, loss in zip(t.tolist(), losses.tolist(), strict=True):
            fed[ti].append(loss)
    return sampler, fed


def test_probabilities_follow_the_root_mean_square_of_the_last_ten_losses_mixed_with_uniform():
    sampler, fed = warmed_sampler()
    rms = np.array([np.sqrt(np.mean(np.square(losses[-10:]))) for losses in fed])
    expected = 0.999 * rms / rms.sum() + 0.001 / 20
    np.testing.assert_allclose(sampler.probabilities().numpy(), expected, rtol=1e-12)


def test_sampler_is_uniform_with_unit_weights_until_every_timestep_has_ten_losses():
    sampler = LossSecondMomentSampler(5)
    for _ in range(10):
        sampler.update_with_losses(torch.arange(4), torch.arange(1.0, 5.0))  # t = 4 never seen
    assert not sampler.warmed_up()
    t, w = sampler.sample(1000, generator=torch.Generator().manual_seed(0))
    t_uniform, _ = UniformSampler(5).sample(1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, t_uniform) and torch.all(w == 1)
    sampler.update_with_losses(torch.full((10,), 4), torch.full((10,), 9.0))
    assert sampler.warmed_up()


def test_importance_weighted_loss_is_unbiased_exactly_over_the_sampling_distribution():
    sampler, _ = warmed_sampler()
    T = 20
    per_t_loss = torch.from_numpy(np.random.default_rng(1).exponential(1.0, T)) * torch.arange(1, T + 1)
    p = sampler.probabilities()
    assert p.min() < 0.5 / T < 2 / T < p.max()  # far from uniform, so the weights matter
    t, w = sampler.sample(20_000, generator=torch.Generator().manual_seed(2))
    # every drawn t carries the weight 1 / (T p_t)
    torch.testing.assert_close(w.double(), 1 / (T * p[t]), rtol=1e-6, atol=0)
    weight_of = torch.zeros(T, dtype=torch.float64)
    weight_of[t] = w.double()
    assert torch.all(weight_of > 0), "every timestep was drawn"
    # E_{t~p}[w_t L_t] summed exactly over the distribution equals the uniform mean of L_t
    expectation = (p * weight_of * per_t_loss).sum()
    torch.testing.assert_close(expectation, per_t_loss.mean(), rtol=1e-6, atol=0)
    # and the draws follow p: each frequency within 5 binomial standard deviations
    frequency = torch.bincount(t, minlength=T).double() / len(t)
    assert torch.all((frequency - p).abs() < 5 * (p * (1 - p) / len(t)).sqrt() + 1e-4)


def test_a_loaded_state_draws_as_the_saved_sampler_does_and_keeps_its_history():
    sampler, _ = warmed_sampler(extra=7)
    state = sampler.state_dict()
    copy = create_timestep_sampler("importance", 20)
    copy.load_state_dict(state)
    a = sampler.sample(64, generator=torch.Generator().manual_seed(3))
    b = copy.sample(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    sampler.update_with_losses(torch.tensor([3]), torch.tensor([100.0]))
    copy.update_with_losses(torch.tensor([3]), torch.tensor([100.0]))
    assert torch.equal(sampler.probabilities(), copy.probabilities())
    with pytest.raises(ValueError, match="does not fit T = 30"):
        LossSecondMomentSampler(30).load_state_dict(state)
    with pytest.raises(ValueError, match="Unknown timestep sampling 'stratified'"):
        create_timestep_sampler("stratified", 20)
