"""Image-to-image (SDEdit) and denoising from step t, against the exact moments of Gaussian images."""

import math

import pytest
import torch
from gaussian_denoiser import GaussianDenoiser
from PIL import Image
from test_class_conditional import MEANS, ancestral_coefficients, mixture_pipeline
from tiny_pipeline import tiny_pipeline

from simple_ddpm import SimpleDDPMImg2ImgPipeline, SimpleDDPMPipeline, SimpleDDPMScheduler

COV = 0.09 * torch.tensor(
    [[1.0, 0.8, 0.6, 0.4], [0.8, 1.0, 0.8, 0.6], [0.6, 0.8, 1.0, 0.8], [0.4, 0.6, 0.8, 1.0]], dtype=torch.float64
)
MEAN = torch.tensor([0.1, -0.1, 0.0, 0.2], dtype=torch.float64)
INPUT = torch.tensor([0.5, 0.0, 0.0, -0.3], dtype=torch.float64)


@pytest.fixture(scope="module")
def gaussian_pipe() -> SimpleDDPMImg2ImgPipeline:
    scheduler = SimpleDDPMScheduler(clip_sample=False)
    pipe = SimpleDDPMImg2ImgPipeline(
        unet=GaussianDenoiser(MEAN, COV, (1, 2, 2), scheduler.alphas_cumprod), scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def chain_moments(pipe, start: int, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and covariance of the output of the ancestral chain t = start..0 from x_start ~ q(x_start | x0),
    in float64: x0_hat = mean + G (x_t - sqrt(a) mean) is affine in x_t, so each step maps N(m, C) to
    N(A m + b, A C A^T + var I) with A = coef_x0 G + coef_xt I, b = coef_x0 (I - sqrt(a) G) mean."""
    eye = torch.eye(len(x0), dtype=torch.float64)
    m, c = None, None
    for t, a, coef_x0, coef_xt, variance in ancestral_coefficients(pipe):
        if t > start:
            continue
        if m is None:
            m, c = a.sqrt() * x0, (1 - a) * eye
        gain = a.sqrt() * COV @ torch.linalg.inv(a * COV + (1 - a) * eye)
        step = coef_x0 * gain + coef_xt * eye
        m = step @ m + coef_x0 * (eye - a.sqrt() * gain) @ MEAN
        c = step @ c @ step.T + variance * eye
    return m, c


def test_small_strength_stays_near_the_input_by_the_exact_moments_of_the_chain(gaussian_pipe):
    n = 4000
    for strength in (0.01, 0.03, 0.1):
        start = round(strength * 1000) - 1  # the first of the last strength n steps of the full chain
        out = gaussian_pipe(
            INPUT.float().view(1, 1, 2, 2),
            strength=strength,
            num_inference_steps=1000,
            batch_size=n,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
        squared_distance = ((out.double() * 2 - 1).flatten(1) - INPUT).pow(2).sum(1)
        m, c = chain_moments(gaussian_pipe, start, INPUT)
        expected = (m - INPUT).pow(2).sum() + c.trace()
        standard_error = squared_distance.std() / math.sqrt(n)
        assert abs(squared_distance.mean() - expected) < 4 * standard_error, (
            strength,
            squared_distance.mean(),
            expected,
        )
        # Exact posterior sampling, x ~ p(x_0 | x_t) with x_t ~ q(x_t | x_0 = input), in closed form: x_0 - x =
        # (I - sqrt(a) G)(mean - x_0) + sqrt(1 - a) G z + N(0, COV - sqrt(a) G COV). At t = 99 the 100-step chain
        # is that close to it; at t = 9 and 29 its fixed posterior variance is coarse (measured: 14% and 6% short).
        if strength == 0.1:
            a = gaussian_pipe.scheduler.alphas_cumprod[start].double()
            eye = torch.eye(4, dtype=torch.float64)
            gain = a.sqrt() * COV @ torch.linalg.inv(a * COV + (1 - a) * eye)
            posterior = ((eye - a.sqrt() * gain) @ (MEAN - INPUT)).pow(2).sum() + (1 - a) * (gain @ gain.T).trace()
            posterior += (COV - a.sqrt() * gain @ COV).trace()
            assert abs(squared_distance.mean() - posterior) < 4 * standard_error, (squared_distance.mean(), posterior)


def test_strength_one_matches_ordinary_sampling(gaussian_pipe):
    n = 4000
    edited = gaussian_pipe(
        INPUT.float().view(1, 1, 2, 2),
        strength=1.0,
        num_inference_steps=100,
        batch_size=n,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    plain = SimpleDDPMPipeline(**gaussian_pipe.components)
    plain.set_progress_bar_config(disable=True)
    sampled = plain(
        batch_size=n, num_inference_steps=100, generator=torch.Generator().manual_seed(1), output_type="pt"
    ).images
    a, b = (edited.double() * 2 - 1).flatten(1), (sampled.double() * 2 - 1).flatten(1)
    mean_se = ((a.var(0) + b.var(0)) / n).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() < 4 * mean_se).all(), (a.mean(0), b.mean(0))
    variance_se = (a.var(0) + b.var(0)) * math.sqrt(2 / n) / math.sqrt(2)
    assert ((a.var(0) - b.var(0)).abs() < 4 * variance_se).all(), (a.var(0), b.var(0))
    assert (a.mean(0) - INPUT).abs().max() > 0.2  # and it forgot the input


def test_denoising_from_step_t_is_the_same_chain_as_strength(gaussian_pipe):
    x0 = INPUT.float().view(1, 1, 2, 2)
    by_strength = gaussian_pipe(
        x0,
        strength=0.1,
        num_inference_steps=1000,
        batch_size=3,
        generator=torch.Generator().manual_seed(5),
        output_type="pt",
    ).images
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn((3, 1, 2, 2), generator=generator)
    x_t = gaussian_pipe.scheduler.add_noise(x0.expand(3, -1, -1, -1), noise, torch.tensor([99]))
    from_t = gaussian_pipe(
        x_t, strength=None, start_timestep=99, num_inference_steps=100, generator=generator, output_type="pt"
    ).images
    assert torch.equal(by_strength, from_t)


def test_denoising_from_step_t_with_fewer_steps_respaces_from_t(gaussian_pipe):
    seen = []
    scheduler_step = gaussian_pipe.scheduler.step

    def record(model_output, timestep, sample, **kwargs):
        seen.append(timestep)
        return scheduler_step(model_output, timestep, sample, **kwargs)

    gaussian_pipe.scheduler.step = record
    try:
        gaussian_pipe(torch.zeros(1, 1, 2, 2), strength=None, start_timestep=500, num_inference_steps=6)
    finally:
        del gaussian_pipe.scheduler.step
    assert seen == [500, 400, 300, 200, 100, 0]


def test_class_labels_and_guidance_reach_the_model():
    """At strength 1 the edit is a guided sample of the class: the same mean as the base pipeline's."""
    plain = mixture_pipeline()
    pipe = SimpleDDPMImg2ImgPipeline(**plain.components)
    pipe.set_progress_bar_config(disable=True)
    n = 2000
    for label, mean in enumerate(MEANS):
        kwargs = dict(num_inference_steps=50, batch_size=n, class_labels=label, output_type="pt")
        conditional = pipe(torch.zeros(1, 1, 2, 2), strength=1.0, generator=torch.Generator().manual_seed(2), **kwargs)
        assert abs((conditional.images * 2 - 1).mean().item() - mean) < 0.02
        guided = pipe(
            torch.zeros(1, 1, 2, 2),
            strength=1.0,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(2),
            **kwargs,
        )
        reference = plain(guidance_scale=1.0, generator=torch.Generator().manual_seed(3), **kwargs)
        a, b = (guided.images * 2 - 1).flatten(1).mean(1), (reference.images * 2 - 1).flatten(1).mean(1)
        assert abs(a.mean() - b.mean()) < 4 * ((a.var() + b.var()) / n).sqrt()
        assert abs(a.mean() - mean) > 0.02  # guidance moved it past the class mean


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(strength=0.0), "strength must lie in (0, 1]"),
        (dict(strength=1.5), "strength must lie in (0, 1]"),
        (dict(strength=0.05, num_inference_steps=10), "strength=0.05 of 10 steps runs no step"),
        (dict(image=Image.new("RGB", (8, 9))), "The image is 8x9 but the model's images are 8x8"),
        (dict(start_timestep=3), "Pass strength=None with start_timestep"),
        (dict(strength=None, start_timestep=10), "start_timestep must be an integer in [0, 9]"),
        (
            dict(strength=None, start_timestep=3, num_inference_steps=5),
            "num_inference_steps must be an integer in [1, 4]",
        ),
        (
            dict(strength=None, start_timestep=3, num_inference_steps=2),
            "With start_timestep, image is x_t, a float tensor",
        ),
    ],
)
def test_bad_img2img_input_is_one_line_error(call, message):
    pipe = SimpleDDPMImg2ImgPipeline.from_pipe(tiny_pipeline())
    kwargs = dict(image=Image.new("RGB", (8, 8)), num_inference_steps=10) | call
    with pytest.raises(ValueError) as error:
        pipe(**kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)
