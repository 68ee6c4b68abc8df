"""Learned reverse variance (Nichol & Dhariwal 2021): the scheduler's interpolation against a float64 numpy oracle,
the bound's terms against torch.distributions, sampling against diffusers' DDPMScheduler, and the pipeline."""

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from torch.distributions import Normal, kl_divergence

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler

C = 3


def network(x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    """A fixed function of (x_t, t) with 2C outputs standing in for a UNet: eps_hat, then v in (-1, 1)."""
    t = torch.as_tensor(t, dtype=x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
    eps = 0.3 * torch.sin(3 * x_t + t / 100)
    v = torch.tanh(x_t.flip(-1) + torch.cos(t / 50))
    return torch.cat([eps, v], 1)


def noise(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def oracle_chain(betas: np.ndarray, steps: list[int]) -> dict[str, np.ndarray]:
    """The respaced chain on `steps` (decreasing), from the T-step betas, in numpy float64."""
    alpha_bar_full = np.cumprod(1 - betas)
    alpha_bar = alpha_bar_full[steps]
    alpha_bar_prev = np.append(alpha_bar[1:], 1.0)
    beta = 1 - alpha_bar / alpha_bar_prev
    posterior = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
    clipped = posterior.copy()
    clipped[-1] = posterior[-2]  # sigma~^2 at the last step is 0; improved-diffusion uses the next one's
    return {
        "alpha_bar": alpha_bar,
        "alpha_bar_prev": alpha_bar_prev,
        "beta": beta,
        "posterior": posterior,
        "log_min": np.log(clipped),
        "log_max": np.log(beta),
    }


def oracle_mean(x_t, eps, alpha_bar, alpha_bar_prev, beta):
    x0 = np.clip((x_t - np.sqrt(1 - alpha_bar) * eps) / np.sqrt(alpha_bar), -1, 1)
    return (np.sqrt(alpha_bar_prev) * beta * x0 + np.sqrt(1 - beta) * (1 - alpha_bar_prev) * x_t) / (1 - alpha_bar)


# --- the interpolation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variance_type", ["learned_range", "learned"])
def test_p_mean_variance_log_variance_is_the_interpolation_of_log_sigma_and_log_beta_in_float64(variance_type):
    scheduler = SimpleDDPMScheduler(variance_type=variance_type, beta_schedule="squaredcos_cap_v2")
    chain = oracle_chain(scheduler.betas.numpy(), list(range(999, -1, -1)))  # every step: the T-step chain
    t = torch.tensor([0, 1, 2, 500, 999])
    x_t = noise(5, C, 4, 4)
    output = network(x_t, t)
    mean, log_variance, _ = scheduler.p_mean_variance(output, x_t, t)

    index = 999 - t.numpy()  # position of each t in the decreasing chain
    v = output[:, C:].numpy()
    log_min, log_max = (chain[k][index].reshape(-1, 1, 1, 1) for k in ("log_min", "log_max"))
    expected = v if variance_type == "learned" else (v + 1) / 2 * log_max + (1 - v) / 2 * log_min
    np.testing.assert_allclose(log_variance.numpy(), expected, rtol=1e-12, atol=1e-12)
    ab, ab_prev, beta = (chain[k][index].reshape(-1, 1, 1, 1) for k in ("alpha_bar", "alpha_bar_prev", "beta"))
    np.testing.assert_allclose(
        mean.numpy(), oracle_mean(x_t.numpy(), output[:, :C].numpy(), ab, ab_prev, beta), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("timesteps", [[999, 700, 300, 10, 0], [980, 500, 499, 3]])
def test_respaced_step_uses_the_respaced_chains_own_beta_and_sigma(timesteps):
    scheduler = SimpleDDPMScheduler(variance_type="learned_range")
    scheduler.set_timesteps(timesteps=timesteps)
    chain = oracle_chain(scheduler.betas.numpy(), timesteps)
    x_t = noise(2, C, 4, 4, seed=1)
    for i, t in enumerate(timesteps[:-1]):  # the last step adds no noise
        output = network(x_t, t)
        generator = torch.Generator().manual_seed(i)
        prev = scheduler.step(output, t, x_t, generator=generator).prev_sample
        z = randn_tensor(x_t.shape, generator=torch.Generator().manual_seed(i), dtype=x_t.dtype)
        v = output[:, C:].numpy()
        log_variance = (v + 1) / 2 * chain["log_max"][i] + (1 - v) / 2 * chain["log_min"][i]
        mean = oracle_mean(
            x_t.numpy(), output[:, :C].numpy(), chain["alpha_bar"][i], chain["alpha_bar_prev"][i], chain["beta"][i]
        )
        np.testing.assert_allclose(prev.numpy(), mean + np.exp(0.5 * log_variance) * z.numpy(), rtol=1e-10, atol=1e-12)
        # where steps are skipped, beta' differs from the T-step beta_t: this catches diffusers' old bug (#3006)
        skipped = timesteps[i] - timesteps[i + 1] > 1
        assert skipped == (not np.isclose(chain["beta"][i], scheduler.betas[t].item(), rtol=1e-3))


# --- the bound's terms ---------------------------------------------------------------------------------------


def test_learned_variance_kl_term_matches_torch_distributions():
    scheduler = SimpleDDPMScheduler(variance_type="learned_range")
    x0 = noise(3, C, 4, 4, seed=2).clamp(-1, 1)
    t = torch.tensor([1, 40, 900])
    x_t = scheduler.add_noise(x0, noise(3, C, 4, 4, seed=3), t)
    output = network(x_t, t)
    bits = scheduler.vb_terms_bpd(output, x0, x_t, t)

    chain = oracle_chain(scheduler.betas.numpy(), list(range(999, -1, -1)))
    index = 999 - t.numpy()
    ab, ab_prev, beta, post, log_min, log_max = (
        torch.from_numpy(chain[k][index]).view(-1, 1, 1, 1)
        for k in ("alpha_bar", "alpha_bar_prev", "beta", "posterior", "log_min", "log_max")
    )
    true_mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab)
    model_mean = torch.from_numpy(
        oracle_mean(x_t.numpy(), output[:, :C].numpy(), ab.numpy(), ab_prev.numpy(), beta.numpy())
    )
    v = output[:, C:]
    log_variance = (v + 1) / 2 * log_max + (1 - v) / 2 * log_min
    kl = kl_divergence(Normal(true_mean, post.sqrt()), Normal(model_mean, (0.5 * log_variance).exp()))
    torch.testing.assert_close(bits, kl.flatten(1).mean(1) / np.log(2), rtol=1e-10, atol=1e-12)


def test_learned_variance_decoder_term_is_the_discretized_gaussian_with_the_learned_scale():
    scheduler = SimpleDDPMScheduler(variance_type="learned_range", clip_sample=False)
    levels = torch.randint(0, 256, (2, C, 4, 4), generator=torch.Generator().manual_seed(4))
    levels[0, 0, 0] = torch.tensor([0, 255, 0, 255])  # the open-ended edge bins
    x0 = (levels / 127.5 - 1).double()
    t = torch.zeros(2, dtype=torch.long)
    x_t = scheduler.add_noise(x0, noise(2, C, 4, 4, seed=5), t)
    output = network(x_t, t)
    bits = scheduler.vb_terms_bpd(output, x0, x_t, t)

    mean, log_variance, _ = scheduler.p_mean_variance(output, x_t, t)
    decoder = Normal(mean, (0.5 * log_variance).exp())
    upper = torch.where(x0 > 0.999, torch.ones_like(x0), decoder.cdf(x0 + 1 / 255))
    lower = torch.where(x0 < -0.999, torch.zeros_like(x0), decoder.cdf(x0 - 1 / 255))
    torch.testing.assert_close(bits, -(upper - lower).log().flatten(1).mean(1) / np.log(2), rtol=1e-8, atol=1e-10)
    # the variance is the network's: v = -1 and v = 1 give the two ends sigma~^2(2) and beta_1
    ends = [
        scheduler.p_mean_variance(torch.cat([output[:, :C], torch.full_like(x_t, e)], 1), x_t, t)[1] for e in (-1, 1)
    ]
    assert torch.allclose(ends[0], scheduler.posterior_variance[1].log()) and torch.allclose(
        ends[1], scheduler.betas[0].log()
    )


# --- sampling against diffusers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("num_inference_steps", [1000, 50])
def test_sampling_matches_diffusers_ddpm_scheduler_learned_range(num_inference_steps):
    # "leading" is diffusers' default spacing, whose previous_timestep our respaced chain must agree with
    config = {"variance_type": "learned_range", "timestep_spacing": "leading", "beta_schedule": "linear"}
    ours, theirs = SimpleDDPMScheduler(**config), DDPMScheduler(**config)
    ours.set_timesteps(num_inference_steps)
    theirs.set_timesteps(num_inference_steps)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    x_ours = x_theirs = noise(2, C, 8, 8, seed=6, dtype=torch.float32)
    g_ours, g_theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for t in ours.timesteps.tolist():
        x_ours = ours.step(network(x_ours, t), t, x_ours, generator=g_ours).prev_sample
        x_theirs = theirs.step(network(x_theirs, t), t, x_theirs, generator=g_theirs).prev_sample
    assert x_ours.std() > 0.1  # the chain went somewhere
    torch.testing.assert_close(x_ours, x_theirs, rtol=1e-4, atol=1e-4)


# --- channel counts and configs ---------------------------------------------------------------------------------


def test_learned_variance_with_a_c_channel_output_is_one_line_naming_both_numbers():
    scheduler = SimpleDDPMScheduler(variance_type="learned_range")
    scheduler.set_timesteps(10)
    x = noise(1, C, 4, 4)
    with pytest.raises(
        ValueError, match=r"^variance_type='learned_range' needs a model output of 6 channels .* got 3;"
    ):
        scheduler.step(x, scheduler.timesteps[0], x)
    with pytest.raises(ValueError, match="needs a model output of 6 channels"):
        scheduler.p_mean_variance(x, x, torch.tensor([3]))


def test_fixed_variance_with_a_2c_channel_output_is_one_line_naming_both_numbers_and_the_fix():
    scheduler = SimpleDDPMScheduler(variance_type="fixed_small")
    scheduler.set_timesteps(10)
    x = noise(1, C, 4, 4)
    with pytest.raises(ValueError, match=r"needs a model output of 3 channels.*got 6; .*'learned_range' or 'learned'"):
        scheduler.step(torch.cat([x, x], 1), scheduler.timesteps[0], x)


@pytest.mark.parametrize("variance_type", ["learned_range", "learned"])
def test_learned_variance_configs_convert_both_ways_with_ddpm_scheduler(variance_type):
    ours = SimpleDDPMScheduler(variance_type=variance_type, beta_schedule="squaredcos_cap_v2")
    theirs = DDPMScheduler.from_config(ours.config)
    assert theirs.config.variance_type == variance_type
    back = SimpleDDPMScheduler.from_config(theirs.config)
    assert back.config.variance_type == variance_type and back.learns_variance
    torch.testing.assert_close(back.log_betas, ours.log_betas, rtol=0, atol=0)


# --- the pipeline -----------------------------------------------------------------------------------------------


def tiny_learned_pipeline(variance_type: str = "learned_range", out_channels: int = 2 * C) -> SimpleDDPMPipeline:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=C, out_channels=out_channels, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    scheduler = SimpleDDPMScheduler(num_train_timesteps=10, beta_end=0.2, variance_type=variance_type)
    pipe = SimpleDDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def grid_images(count: int = 2) -> torch.Tensor:
    levels = torch.randint(0, 256, (count, C, 8, 8), generator=torch.Generator().manual_seed(8))
    return levels / 127.5 - 1


def test_pipeline_with_the_wrong_unet_fails_before_sampling_or_bounding():
    for pipe, message in (
        (tiny_learned_pipeline(out_channels=C), "needs a model output of 6 channels"),
        (tiny_learned_pipeline("fixed_small"), "needs a model output of 3 channels"),
    ):
        with pytest.raises(ValueError, match=message):
            pipe(batch_size=1, num_inference_steps=2)
        with pytest.raises(ValueError, match=message):
            pipe.elbo(grid_images())


def test_pipeline_elbo_uses_the_learned_variance_term_by_term():
    pipe = tiny_learned_pipeline()
    images = grid_images()
    out = pipe.elbo(images, generator=torch.Generator().manual_seed(0))
    # the same terms recomputed here with the scheduler's vb_terms_bpd on the same noise draws
    g = torch.Generator().manual_seed(0)
    x0 = images.double()
    for t in range(9, -1, -1):
        z = randn_tensor(x0.shape, generator=g, dtype=torch.float32).double()
        tt = torch.full((2,), t)
        x_t = pipe.scheduler.add_noise(x0, z, tt)
        with torch.no_grad():
            output = pipe.unet(x_t.float(), tt).sample.double()
        bits = pipe.scheduler.vb_terms_bpd(output, x0, x_t, tt)
        term = out.reconstruction if t == 0 else out.denoising[:, t - 1]
        torch.testing.assert_close(term, bits, rtol=1e-6, atol=0)  # float32 UNet calls batched alike


def test_saved_learned_variance_pipeline_loads_samples_and_bounds_as_before_and_as_a_stock_ddpm_pipeline(tmp_path):
    pipe = tiny_learned_pipeline()
    pipe.save_pretrained(tmp_path)
    loaded = SimpleDDPMPipeline.from_pretrained(tmp_path)
    assert loaded.scheduler.config.variance_type == "learned_range" and loaded.unet.config.out_channels == 2 * C

    def sample(p):
        return p(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="np")[0]

    np.testing.assert_array_equal(sample(loaded), sample(pipe))
    images = grid_images()
    bound = lambda p: p.elbo(images, generator=torch.Generator().manual_seed(1)).bits_per_dim  # noqa: E731
    torch.testing.assert_close(bound(loaded), bound(pipe), rtol=0, atol=0)

    stock = DDPMPipeline.from_pretrained(tmp_path)  # diffusers' own scheduler, with its learned_range
    assert type(stock.scheduler) is DDPMScheduler and stock.scheduler.config.variance_type == "learned_range"
    stock.set_progress_bar_config(disable=True)
    theirs = stock(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="np")
    np.testing.assert_allclose(theirs.images, sample(pipe), rtol=0, atol=1e-5)


def test_card_of_a_learned_variance_pipeline_says_the_variance_is_learned():
    from simple_ddpm.model_card import pipeline_model_card

    card = pipeline_model_card(tiny_learned_pipeline(), "alice/iddpm").text
    assert "| reverse variance | learned (`learned_range`, Nichol & Dhariwal 2021)" in card
    fixed = pipeline_model_card(tiny_learned_pipeline("fixed_large", out_channels=C), "alice/ddpm").text
    assert "| reverse variance | fixed: beta_t (`fixed_large`" in fixed
