"""DDIM inversion, decoding and interpolation, against the exact probability-flow map of Gaussian images."""

import pytest
import torch
from gaussian_denoiser import GaussianDenoiser
from PIL import Image
from tiny_pipeline import tiny_pipeline

from simple_ddpm import SimpleDDPMInversionPipeline, SimpleDDPMScheduler
from simple_ddpm.pipeline_simple_ddpm_inversion import slerp

generator = torch.Generator().manual_seed(0)
_factor = torch.randn(16, 16, generator=generator, dtype=torch.float64)
COV = 0.05 * (_factor @ _factor.T / 16 + 0.1 * torch.eye(16, dtype=torch.float64))  # 16 correlated pixels
MEAN = 0.1 * torch.randn(16, generator=generator, dtype=torch.float64)


@pytest.fixture(scope="module")
def pipe() -> SimpleDDPMInversionPipeline:
    scheduler = SimpleDDPMScheduler()  # clip_sample=True: inversion must turn it off to be invertible
    pipeline = SimpleDDPMInversionPipeline(
        unet=GaussianDenoiser(MEAN, COV, (1, 4, 4), scheduler.alphas_cumprod), scheduler=scheduler
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    draws = (
        MEAN
        + torch.randn(6, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        @ torch.linalg.cholesky(COV).T
    )
    return draws.clamp(-1, 1).float().view(6, 1, 4, 4)


def exact_x_T(x0: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """The probability-flow ODE's image of x_0 at alpha_bar, in closed form for x_0 ~ N(MEAN, COV): in the
    eigenbasis of COV (eigenvalues l) x / sqrt(alpha_bar) - MEAN scales by sqrt((l + s^2) / l), s^2 = (1 - alpha_bar)
    / alpha_bar (DDIM's ODE in x / sqrt(alpha_bar) and s, Song et al. 2021 eq. 14, with eps_hat linear in x)."""
    eigenvalues, vectors = torch.linalg.eigh(COV)
    s2 = (1 - alpha_bar) / alpha_bar
    scale = vectors @ torch.diag(((eigenvalues + s2) / eigenvalues).sqrt()) @ vectors.T
    y = (x0.double().flatten(1) - MEAN) @ scale.T
    return (alpha_bar**0.5 * (MEAN + y)).view_as(x0)


def test_inversion_converges_to_the_exact_probability_flow_x_T(pipe, images):
    target = exact_x_T(images, pipe.scheduler.alphas_cumprod[-1].item())
    errors = [(pipe.invert(images, n).double() - target).pow(2).mean().sqrt().item() for n in (10, 50, 250)]
    # measured: 0.48, 0.15, 0.027 (x_T has unit scale): 3.3 and 5.4 times smaller per 5 times the steps
    assert errors[0] > 3 * errors[1] and errors[1] > 4 * errors[2] and errors[2] < 0.03, errors


def test_decoding_the_inversion_returns_the_input_with_error_falling_with_steps(pipe, images):
    errors = []
    for n in (10, 50, 250):
        decoded = pipe(pipe.invert(images, n), n, output_type="pt").images * 2 - 1
        errors.append((decoded - images).pow(2).mean().sqrt().item())
    # measured: 0.154, 0.040, 0.0085 (images in [-1, 1]): 3.9 and 4.7 times smaller per 5 times the steps
    assert errors[0] > 3 * errors[1] and errors[1] > 4 * errors[2] and errors[2] < 0.01, errors


def test_decoding_is_the_scheduler_eta_zero_chain_unclipped(pipe):
    latents = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    decoded = pipe(latents, 20, output_type="pt").images
    scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    scheduler.set_timesteps(20)
    x = latents
    for t in scheduler.timesteps:
        x = scheduler.step(pipe.unet(x, t).sample, int(t), x, eta=0.0).prev_sample
    assert torch.equal(decoded, (x / 2 + 0.5).clamp(0, 1))


def test_interpolation_ends_are_the_round_trips_and_linear_is_a_cross_fade(pipe, images):
    a, b = images[:1], images[1:2]
    frames = pipe.interpolate(a, b, num_frames=5, num_inference_steps=50, output_type="pt").images
    latents = pipe.invert(torch.cat([a, b]), 50)
    ends = pipe(latents, 50, output_type="pt").images
    assert torch.allclose(frames[0], ends[0], atol=1e-6) and torch.allclose(frames[-1], ends[1], atol=1e-6)
    linear = pipe.interpolate(a, b, num_frames=5, interpolation="linear", output_type="pt").images
    expected = torch.stack([torch.lerp(a[0], b[0], w) for w in (0, 0.25, 0.5, 0.75, 1)]) / 2 + 0.5
    assert torch.allclose(linear, expected.clamp(0, 1), atol=1e-6)


def test_slerp_keeps_the_norm_of_gaussian_latents_where_lerp_shrinks_it():
    a, b = torch.randn(2, 1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    middle = slerp(a, b, 0.5)
    assert abs(middle.norm() / a.norm() - 1) < 0.02  # nearly orthogonal: the arc keeps the radius
    assert abs(torch.lerp(a, b, 0.5).norm() / a.norm() - 2**-0.5) < 0.02
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    assert torch.allclose(slerp(a, a, 0.3), a, atol=1e-6)  # parallel: the straight line


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: p.invert(Image.new("RGB", (8, 4))), "The image is 8x4 but the model's images are 8x8"),
        (
            lambda p: p.invert(torch.zeros(1, 3, 8, 8), num_inference_steps=11),
            "num_inference_steps must be an integer in [1, 10]",
        ),
        (lambda p: p(torch.zeros(1, 3, 4, 4)), "latents must be a tensor (B, 3, 8, 8)"),
        (
            lambda p: p.interpolate(Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8)), num_frames=1),
            "num_frames must be an integer >= 2",
        ),
        (
            lambda p: p.interpolate(Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8)), interpolation="cubic"),
            "Unknown interpolation 'cubic'",
        ),
        (lambda p: p.interpolate(Image.new("RGB", (8, 8)), Image.new("RGB", (7, 8))), "The second image is 7x8"),
    ],
)
def test_bad_inversion_input_is_one_line_error(call, message):
    pipe = SimpleDDPMInversionPipeline.from_pipe(tiny_pipeline())
    with pytest.raises(ValueError) as error:
        call(pipe)
    assert message in str(error.value) and "\n" not in str(error.value)
