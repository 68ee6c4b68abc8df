"""Few-step sampling: `eta` (DDIM, Song et al. 2021) in SimpleDDPMScheduler.step, other diffusers schedulers in
the pipeline, and `callback_on_step_end`."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from ideal_denoiser import ideal_denoiser
from tiny_pipeline import tiny_unet

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler, make_hub_layout
from simple_ddpm.model_card import pipeline_model_card


def float64_ddim(x_T, steps, alpha_bar, eta, generator):
    """Song et al. 2021 eq. 12 and 16 written out, float64, with the ideal denoiser; t' is the next listed step."""
    x = x_T.double()
    for i, t in enumerate(steps):
        a_t = alpha_bar[t].item()
        a_prev = alpha_bar[steps[i + 1]].item() if i + 1 < len(steps) else 1.0
        x0_hat = 0.5 * torch.tanh(0.5 * math.sqrt(a_t) * x / (1 - a_t))
        eps_hat = (x - math.sqrt(a_t) * x0_hat) / math.sqrt(1 - a_t)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
        x = math.sqrt(a_prev) * x0_hat + math.sqrt(1 - a_prev - sigma**2) * eps_hat
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return x


def run_chain(scheduler, num_steps, eta=None, seed=1, dtype=torch.float64, **step_kwargs):
    scheduler.set_timesteps(num_steps)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    eta_kwargs = {} if eta is None else {"eta": eta}
    for t in scheduler.timesteps.tolist():
        output = ideal_denoiser(x, t, scheduler.alphas_cumprod, scheduler.config.prediction_type)
        x = scheduler.step(output, t, x, generator=generator, **eta_kwargs, **step_kwargs).prev_sample
    return x


# --- eta in SimpleDDPMScheduler.step ------------------------------------------------------------------------------


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_eta_one_is_exactly_the_ddpm_step(variance_type):
    scheduler = SimpleDDPMScheduler(num_train_timesteps=100, beta_end=0.2, variance_type=variance_type)
    torch.testing.assert_close(run_chain(scheduler, 13), run_chain(scheduler, 13, eta=1.0), rtol=0, atol=0)


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_eta_step_is_ddim_equations_12_and_16_on_the_respaced_chain(eta, spacing):
    scheduler = SimpleDDPMScheduler(num_train_timesteps=100, beta_end=0.2, clip_sample=False, timestep_spacing=spacing)
    # eta = 1 takes DDPM's code path (posterior mean and variance): equal to eq. 12 with sigma = posterior std
    ours = run_chain(scheduler, 25, eta=eta)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = float64_ddim(
        x_T, scheduler.timesteps.tolist(), scheduler.alphas_cumprod, eta, torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-9)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("clip_sample", [False, True])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_eta_step_matches_diffusers_ddim_on_the_same_timesteps(prediction_type, clip_sample, eta):
    # diffusers' DDIM steps to t - T // n, the next step of "leading" spacing; with clipping it keeps the unclipped
    # eps_hat unless use_clipped_model_output=True, while ours derives eps_hat from the clipped x0_hat.
    config = dict(num_train_timesteps=100, beta_end=0.2, prediction_type=prediction_type, clip_sample=clip_sample)
    ours = SimpleDDPMScheduler(**config, timestep_spacing="leading")
    theirs = DDIMScheduler(**config, timestep_spacing="leading", set_alpha_to_one=True)
    ours.set_timesteps(20)
    theirs.set_timesteps(20)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.5
    x_ours, x_theirs = x, x
    g_ours, g_theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for t in ours.timesteps.tolist():
        out = ideal_denoiser(x_ours, t, ours.alphas_cumprod, prediction_type)
        x_ours = ours.step(out, t, x_ours, generator=g_ours, eta=eta).prev_sample
        out = ideal_denoiser(x_theirs, t, ours.alphas_cumprod, prediction_type)
        x_theirs = theirs.step(out, t, x_theirs, eta=eta, use_clipped_model_output=True, generator=g_theirs)
        x_theirs = x_theirs.prev_sample
    torch.testing.assert_close(x_ours, x_theirs, rtol=0, atol=5e-5)  # diffusers rounds its coefficients to float32


def test_eta_zero_is_deterministic_given_x_T():
    scheduler = SimpleDDPMScheduler(num_train_timesteps=100, beta_end=0.2)
    torch.testing.assert_close(run_chain(scheduler, 10, eta=0.0, seed=1), run_chain(scheduler, 10, eta=0.0, seed=2))
    assert not torch.equal(run_chain(scheduler, 10, eta=0.5, seed=1), run_chain(scheduler, 10, eta=0.5, seed=2))


@pytest.mark.parametrize(
    "kwargs,eta,message",
    [
        ({}, -0.1, r"eta must lie in \[0, 1\]"),
        ({}, 1.5, r"eta must lie in \[0, 1\]"),
        ({"variance_type": "fixed_large"}, 0.0, "needs variance_type='fixed_small'"),
    ],
)
def test_bad_eta_is_refused(kwargs, eta, message):
    scheduler = SimpleDDPMScheduler(num_train_timesteps=10, **kwargs)
    scheduler.set_timesteps(5)
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match=message):
        scheduler.step(x, scheduler.timesteps[0], x, eta=eta)


# --- other schedulers in the pipeline -----------------------------------------------------------------------------


@pytest.fixture
def pipe():
    pipeline = SimpleDDPMPipeline(unet=tiny_unet(), scheduler=SimpleDDPMScheduler(num_train_timesteps=50))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def sample(pipeline, seed=3, **kwargs):
    kwargs = {"batch_size": 2, "num_inference_steps": 10, "output_type": "np", **kwargs}
    return pipeline(generator=torch.Generator().manual_seed(seed), **kwargs).images


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_pipeline_with_diffusers_ddim_scheduler_equals_diffusers_ddim_pipeline(pipe, eta):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    theirs = DDIMPipeline(unet=pipe.unet, scheduler=pipe.scheduler)
    theirs.set_progress_bar_config(disable=True)
    expected = theirs(
        batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=10, eta=eta, output_type="np"
    ).images
    np.testing.assert_allclose(sample(pipe, eta=eta), expected, atol=1e-6)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_pipeline_with_eta_zero_draws_nothing_after_x_T(pipe, eta):
    generator = torch.Generator().manual_seed(3)

    def reseed(pipeline, step_index, timestep, callback_kwargs):  # any later draw now differs
        generator.manual_seed(1000 + step_index)
        return {}

    images = pipe(
        batch_size=2,
        generator=generator,
        num_inference_steps=10,
        eta=eta,
        output_type="np",
        callback_on_step_end=reseed,
    ).images
    assert np.array_equal(images, sample(pipe, eta=eta)) == (eta == 0)


def test_pipeline_runs_an_euler_scheduler_with_its_input_scaling_and_init_sigma(pipe):
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    images = sample(pipe, num_inference_steps=6)
    # the same loop written out as diffusers' docs write it
    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(6)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = pipe.unet(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(output, t, x).prev_sample
    expected = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-6)


def test_pipeline_runs_dpm_solver_and_refuses_eta_it_does_not_take(pipe):
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    images = sample(pipe, num_inference_steps=5)
    assert images.shape == (2, 8, 8, 3) and np.isfinite(images).all()
    with pytest.raises(ValueError, match="DPMSolverMultistepScheduler takes no eta"):
        sample(pipe, eta=0.0)


def test_elbo_with_another_scheduler_says_it_needs_the_ddpm_tables(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(TypeError, match="elbo needs the DDPM posterior tables of a SimpleDDPMScheduler"):
        pipe.elbo(torch.zeros(1, 3, 8, 8))


def test_pipeline_refuses_what_is_not_a_scheduler():
    with pytest.raises(TypeError, match="needs a diffusers scheduler"):
        SimpleDDPMPipeline(unet=tiny_unet(), scheduler=object())


# --- callback_on_step_end ------------------------------------------------------------------------------------------


def test_callback_sees_every_step_with_x_t_and_x0_hat(pipe):
    seen = []

    def record(pipeline, step_index, timestep, callback_kwargs):
        seen.append((step_index, timestep, callback_kwargs["image"].clone(), callback_kwargs["pred_original_sample"]))
        return {}

    images = pipe(
        batch_size=2,
        generator=torch.Generator().manual_seed(3),
        num_inference_steps=10,
        output_type="pt",
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["image", "pred_original_sample"],
    ).images
    assert [s[0] for s in seen] == list(range(10))
    assert [s[1] for s in seen] == pipe.scheduler.timesteps.tolist()
    # the last step returns x0_hat itself, and the images are it mapped to [0, 1]
    torch.testing.assert_close(seen[-1][2], seen[-1][3])
    torch.testing.assert_close(images, (seen[-1][2] / 2 + 0.5).clamp(0, 1))
    # and x_t at step i is what the same chain gives when stopped there (callbacks change nothing)
    torch.testing.assert_close(images, sample(pipe, output_type="pt"))


def test_callback_can_replace_the_image(pipe):
    def zero_at_the_end(pipeline, step_index, timestep, callback_kwargs):
        return {"image": torch.zeros_like(callback_kwargs["image"])} if step_index == 9 else {}

    images = sample(pipe, callback_on_step_end=zero_at_the_end)
    np.testing.assert_allclose(images, 0.5)


def test_unknown_callback_tensor_input_is_refused(pipe):
    with pytest.raises(ValueError, match="valid values are: image, pred_original_sample"):
        sample(pipe, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["latents"])


def test_pipeline_saved_with_another_diffusers_scheduler_loads_and_samples_with_it(pipe, tmp_path):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    expected = sample(pipe, eta=0.0)
    pipe.save_pretrained(tmp_path / "ddim")
    index = json.loads((tmp_path / "ddim" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]  # an entry that loads by repo id as it is
    loaded = SimpleDDPMPipeline.from_pretrained(tmp_path / "ddim")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, DDIMScheduler)
    np.testing.assert_array_equal(sample(loaded, eta=0.0), expected)
    card = pipeline_model_card(loaded, "user/ddim").text  # what push_to_hub writes for a folder without a card
    assert "this pipeline samples with DDIMScheduler" in card


def test_hub_layout_refuses_a_scheduler_that_does_not_load_by_repo_id(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "run")
    index_path = tmp_path / "run" / "model_index.json"
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({**index, "scheduler": ["my_library", "MyScheduler"]}))
    with pytest.raises(ValueError, match=r"scheduler is my_library\.MyScheduler; a shared SimpleDDPMPipeline needs"):
        make_hub_layout(tmp_path / "run")
