"""SimpleDDPMPipeline: sampling, saving and loading, and the exact variational bound."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.pipeline_simple_ddpm import geometric_strata


class BinaryPixelDenoiser(ModelMixin, ConfigMixin):
    """The exact network for i.i.d. pixels uniform on {-1, 1}: x0_hat = E[x_0 | x_t] = tanh(sqrt(a) x_t / (1 - a)).

    `shrink` < 1 degrades it towards predicting 0, to compare a better and a worse model.
    """

    @register_to_config
    def __init__(self, alphas_cumprod: list[float], sample_size: int = 4, in_channels: int = 1, shrink: float = 1.0):
        super().__init__()
        self.register_buffer("alpha_bar", torch.tensor(alphas_cumprod, dtype=torch.float64))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> UNet2DOutput:
        timestep = torch.as_tensor(timestep, device=sample.device).expand(len(sample))
        alpha_bar = self.alpha_bar[timestep].view(-1, 1, 1, 1).to(sample.dtype)
        x0_hat = self.config.shrink * torch.tanh(alpha_bar.sqrt() * sample / (1 - alpha_bar))
        return UNet2DOutput(sample=(sample - alpha_bar.sqrt() * x0_hat) / (1 - alpha_bar).sqrt())


def binary_pipeline(num_train_timesteps=100, shrink=1.0, size=4):
    scheduler = SimpleDDPMScheduler(num_train_timesteps=num_train_timesteps, beta_end=0.2)
    unet = BinaryPixelDenoiser(scheduler.alphas_cumprod.tolist(), sample_size=size, shrink=shrink)
    return SimpleDDPMPipeline(unet=unet, scheduler=scheduler)


def binary_images(n, size=4, seed=0):
    return torch.randint(0, 2, (n, 1, size, size), generator=torch.Generator().manual_seed(seed)).float() * 2 - 1


def tiny_unet(channels=3, size=8):
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


@pytest.fixture
def pipe():
    pipeline = SimpleDDPMPipeline(unet=tiny_unet(), scheduler=SimpleDDPMScheduler(num_train_timesteps=50))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# --- sampling -------------------------------------------------------------------------------------------------


def test_sampling_is_reproducible_and_per_image_generators_are_independent_of_batch(pipe):
    a = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="pt")
    b = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="pt")
    assert torch.equal(a.images, b.images)
    generators = [torch.Generator().manual_seed(s) for s in (7, 8, 9)]
    batch = pipe(batch_size=3, generator=generators, num_inference_steps=10, output_type="pt").images
    alone = pipe(batch_size=1, generator=[torch.Generator().manual_seed(8)], num_inference_steps=10, output_type="pt")
    torch.testing.assert_close(batch[1:2], alone.images, rtol=1e-5, atol=1e-6)


def test_sampling_loop_equals_diffusers_ddpm_pipeline_with_the_same_unet(pipe):
    ours = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=50, output_type="np")
    theirs = DDPMPipeline(unet=pipe.unet, scheduler=DDPMScheduler(num_train_timesteps=50))
    theirs.set_progress_bar_config(disable=True)
    expected = theirs(
        batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=50, output_type="np"
    )
    np.testing.assert_allclose(ours.images, expected.images, atol=1e-5)


def test_output_types_hold_the_same_image(pipe):
    kwargs = dict(batch_size=2, num_inference_steps=5)
    pt = pipe(generator=torch.Generator().manual_seed(1), output_type="pt", **kwargs).images
    arr = pipe(generator=torch.Generator().manual_seed(1), output_type="np", **kwargs).images
    pil = pipe(generator=torch.Generator().manual_seed(1), output_type="pil", **kwargs).images
    assert pt.shape == (2, 3, 8, 8) and 0 <= pt.min() and pt.max() <= 1
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy())
    assert pil[0].size == (8, 8) and pil[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil[0]), (arr[0] * 255).round().astype(np.uint8))


def test_grayscale_unet_gives_grayscale_pil_images():
    pipeline = SimpleDDPMPipeline(unet=tiny_unet(channels=1), scheduler=SimpleDDPMScheduler(num_train_timesteps=20))
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0)).images
    assert images[0].mode == "L"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_unet_samples_close_to_float32(pipe, dtype):
    reference = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=5, output_type="pt")
    pipe.to(dtype=dtype)
    half = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=5, output_type="pt")
    assert half.images.dtype == torch.float32 and torch.isfinite(half.images).all()
    torch.testing.assert_close(half.images, reference.images, rtol=0, atol=0.05)


def test_bad_sampling_arguments_are_refused(pipe):
    with pytest.raises(ValueError, match="pil, np, pt"):
        pipe(output_type="tensor")
    with pytest.raises(ValueError, match="one per image"):
        pipe(batch_size=3, generator=[torch.Generator()])
    with pytest.raises(ValueError, match=r"integer in \[1, 50\]"):
        pipe(num_inference_steps=51)


# --- saving and loading -----------------------------------------------------------------------------------------


def test_save_and_load_round_trip_in_safetensors_gives_the_same_samples(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").exists()
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert (tmp_path / "scheduler" / "scheduler_config.json").exists()
    loaded = SimpleDDPMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, SimpleDDPMScheduler)
    kwargs = dict(batch_size=2, num_inference_steps=7, output_type="pt")
    a = pipe(generator=torch.Generator().manual_seed(4), **kwargs).images
    b = loaded(generator=torch.Generator().manual_seed(4), **kwargs).images
    assert torch.equal(a, b)


def test_diffusers_ddpm_pipeline_folder_loads_with_our_scheduler(tmp_path):
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=30)).save_pretrained(tmp_path)
    loaded = SimpleDDPMPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.scheduler, SimpleDDPMScheduler)
    assert loaded.scheduler.config.num_train_timesteps == 30


# --- the bound ----------------------------------------------------------------------------------------------------


def test_elbo_terms_add_up_and_prior_is_the_closed_form():
    pipeline = binary_pipeline()
    images = binary_images(6)
    out = pipeline.elbo(images, generator=torch.Generator().manual_seed(0))
    assert out.denoising.shape == (6, 99) and out.prior.shape == out.reconstruction.shape == (6,)
    torch.testing.assert_close(out.bits_per_dim, out.prior + out.denoising.sum(-1) + out.reconstruction)
    alpha_bar = pipeline.scheduler.alphas_cumprod[-1].item()
    # x_0^2 = 1 for binary pixels: KL(N(sqrt(a) x0, 1 - a) || N(0, 1)) per dim, in bits
    prior = 0.5 * (alpha_bar + (1 - alpha_bar) - 1 - math.log(1 - alpha_bar)) / math.log(2)
    torch.testing.assert_close(out.prior, torch.full((6,), prior, dtype=torch.float64))


def test_elbo_under_zero_terminal_snr_has_no_prior_term_and_is_refused_for_epsilon():
    images = binary_images(2, size=8).expand(-1, 3, -1, -1)
    for prediction_type in ("v_prediction", "epsilon"):
        scheduler = SimpleDDPMScheduler(
            num_train_timesteps=20, rescale_betas_zero_snr=True, prediction_type=prediction_type
        )
        pipeline = SimpleDDPMPipeline(unet=tiny_unet(), scheduler=scheduler)
        pipeline.set_progress_bar_config(disable=True)
        if prediction_type == "epsilon":
            with pytest.raises(ValueError, match="bound is undefined for prediction_type='epsilon'"):
                pipeline.elbo(images, generator=torch.Generator().manual_seed(0))
            continue
        out = pipeline.elbo(images, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out.prior, torch.zeros(2, dtype=torch.float64))  # q(x_T | x_0) = N(0, I)
        assert torch.isfinite(out.bits_per_dim).all()


def test_elbo_of_the_exact_denoiser_is_not_below_the_data_entropy():
    """Pixels uniform on {-1, 1} have 1 bit/dim of entropy: no model's bound can be lower on average."""
    out = binary_pipeline().elbo(binary_images(256), generator=torch.Generator().manual_seed(1))
    stderr = out.bits_per_dim.std().item() / math.sqrt(256)
    assert out.bits_per_dim.mean().item() > 1.0 - 3 * stderr


def test_elbo_decreases_when_the_model_improves():
    images = binary_images(64)
    bounds = [
        binary_pipeline(shrink=shrink).elbo(images, generator=torch.Generator().manual_seed(2)).bits_per_dim.mean()
        for shrink in (0.5, 0.9, 1.0)
    ]
    assert bounds[0] > bounds[1] > bounds[2]


def test_elbo_is_per_image_reproducible_and_independent_of_batching():
    pipeline = binary_pipeline()
    images = binary_images(4)
    generators = lambda: [torch.Generator().manual_seed(s) for s in range(4)]  # noqa: E731
    whole = pipeline.elbo(images, generator=generators())
    chunked = pipeline.elbo(images, generator=generators(), batch_size=2)
    many_steps_per_call = pipeline.elbo(images, generator=generators(), batch_size=64)
    torch.testing.assert_close(whole.bits_per_dim, chunked.bits_per_dim, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(whole.bits_per_dim, many_steps_per_call.bits_per_dim, rtol=1e-6, atol=1e-9)


def test_elbo_estimate_from_few_timesteps_is_unbiased():
    pipeline = binary_pipeline(num_train_timesteps=50)
    images = binary_images(16)
    exact = torch.stack(
        [pipeline.elbo(images, generator=torch.Generator().manual_seed(s)).bits_per_dim.mean() for s in range(8)]
    )
    estimates = torch.stack(
        [
            pipeline.elbo(images, generator=torch.Generator().manual_seed(s), num_timesteps=5).bits_per_dim.mean()
            for s in range(100, 260)
        ]
    )
    out = pipeline.elbo(images, generator=torch.Generator().manual_seed(0), num_timesteps=5)
    assert (out.denoising != 0).sum(-1).eq(5).all()  # K columns, scaled, the rest zero
    stderr = math.sqrt(estimates.var() / len(estimates) + exact.var() / len(exact))
    assert abs(estimates.mean() - exact.mean()) < 4 * stderr


@pytest.mark.parametrize("num_terms,num_strata", [(999, 100), (999, 50), (49, 5), (10, 10), (999, 1)])
def test_geometric_strata_partition_the_terms_with_the_first_ones_alone(num_terms, num_strata):
    strata = geometric_strata(num_terms, num_strata)
    assert len(strata) == num_strata and strata[0][0] == 0 and strata[-1][1] == num_terms
    assert all(stop > start for start, stop in strata)
    assert all(a[1] == b[0] for a, b in zip(strata[:-1], strata[1:], strict=True))  # no gap or overlap
    assert strata[0] == (0, 1) or num_strata == 1  # L_1, the largest term, is always evaluated exactly


def test_elbo_of_a_unet_pipeline_runs_on_real_unet(pipe):
    images = torch.randint(0, 256, (2, 3, 8, 8)).float() / 127.5 - 1
    out = pipe.elbo(images, generator=torch.Generator().manual_seed(0), num_timesteps=10)
    assert torch.isfinite(out.bits_per_dim).all() and (out.bits_per_dim > 0).all()


@pytest.mark.parametrize(
    "images,message",
    [
        (torch.full((1, 1, 4, 4), 1.5), r"must lie in \[-1, 1\]"),
        (torch.full((1, 1, 4, 4), 0.3), "8-bit grid"),
        (torch.zeros(1, 4, 4), r"\(B, C, H, W\)"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.uint8), "must be float"),
    ],
)
def test_elbo_refuses_images_off_the_8bit_grid_in_minus_one_one(images, message):
    with pytest.raises(ValueError, match=message):
        binary_pipeline().elbo(images)


def test_elbo_refuses_bad_num_timesteps():
    with pytest.raises(ValueError, match=r"num_timesteps must be in \[1, 99\]"):
        binary_pipeline().elbo(binary_images(1), num_timesteps=100)
