"""RePaint inpainting: the exact conditional of Gaussian images, the kept pixels, the schedule, and bad input."""

import numpy as np
import pytest
import torch
from gaussian_denoiser import GaussianDenoiser
from PIL import Image
from test_class_conditional import MEANS, mixture_pipeline
from tiny_pipeline import tiny_pipeline

from simple_ddpm import SimpleDDPMInpaintPipeline, SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.pipeline_simple_ddpm_inpaint import repaint_levels

# Four pixels of a 2x2 image, x_0 ~ N(MEAN, COV): neighbours correlated 0.8, then 0.6, 0.4.
COV = 0.09 * torch.tensor([[1.0, 0.8, 0.6, 0.4], [0.8, 1.0, 0.8, 0.6], [0.6, 0.8, 1.0, 0.8], [0.4, 0.6, 0.8, 1.0]])
MEAN = torch.tensor([0.1, -0.1, 0.0, 0.2])
KNOWN, UNKNOWN = [0, 3], [1, 2]


def geometric_noise_scheduler(num_train_timesteps: int = 100) -> SimpleDDPMScheduler:
    """1 - alpha_bar_t geometric from 1e-4 to 1: steps that are small next to the data's variance at every noise
    level, so that RePaint's resampling, not the chain's coarseness, decides how close it comes."""
    noise = np.geomspace(1e-4, 0.9999, num_train_timesteps)
    alpha_bar = 1 - noise
    betas = 1 - alpha_bar / np.concatenate([[1.0], alpha_bar[:-1]])
    return SimpleDDPMScheduler(
        num_train_timesteps=num_train_timesteps, trained_betas=betas.tolist(), clip_sample=False
    )


def gaussian_inpaint_pipeline() -> SimpleDDPMInpaintPipeline:
    scheduler = geometric_noise_scheduler()
    pipe = SimpleDDPMInpaintPipeline(
        unet=GaussianDenoiser(MEAN, COV, (1, 2, 2), scheduler.alphas_cumprod), scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_repaint_approaches_the_exact_gaussian_conditional_as_resampling_grows():
    pipe = gaussian_inpaint_pipeline()
    image = torch.tensor([0.5, 0.0, 0.0, -0.3]).view(1, 1, 2, 2)
    mask = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    known = image.flatten()[KNOWN].double()
    cov = COV.double()
    gain = cov[UNKNOWN][:, KNOWN] @ torch.linalg.inv(cov[KNOWN][:, KNOWN])
    exact_mean = MEAN.double()[UNKNOWN] + gain @ (known - MEAN.double()[KNOWN])
    exact_cov = cov[UNKNOWN][:, UNKNOWN] - gain @ cov[KNOWN][:, UNKNOWN]
    n = 4000
    mean_errors, variance_errors = [], []
    for resamplings in (1, 3, 10):
        out = pipe(
            image,
            mask,
            num_inference_steps=100,
            jump_length=10,
            jump_n_sample=resamplings,
            batch_size=n,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
        x = (out.double() * 2 - 1).flatten(1)
        assert torch.allclose(x[:, KNOWN], known.expand(n, -1), atol=1e-6)  # kept (bit for bit: the PNG test)
        filled = x[:, UNKNOWN]
        # errors in standard errors of the Monte Carlo estimates: sqrt(var / n) and var sqrt(2 / n)
        mean_errors.append(((filled.mean(0) - exact_mean) / (exact_cov.diag() / n).sqrt()).abs().max().item())
        variance = filled.var(0)
        variance_errors.append(
            ((variance - exact_cov.diag()) / (exact_cov.diag() * (2 / n) ** 0.5)).abs().max().item()
        )
    # measured: mean 22.8, 10.1, 2.0 standard errors; variance 23.5, 6.0, 1.3
    assert mean_errors[0] > mean_errors[1] > mean_errors[2] and mean_errors[0] > 10, mean_errors
    assert variance_errors[0] > variance_errors[1] > variance_errors[2] and variance_errors[0] > 10, variance_errors
    assert mean_errors[2] < 4 and variance_errors[2] < 4, (mean_errors, variance_errors)


def test_schedule_walks_each_stretch_jump_n_sample_times_and_ends_at_the_data():
    levels = repaint_levels(10, 2, 3)
    steps_down = sum(b == a + 1 for a, b in zip(levels, levels[1:], strict=False))
    assert levels[0] == 0 and levels[-1] == 10
    assert all(b == a + 1 or b == a - 2 for a, b in zip(levels, levels[1:], strict=False))
    jumps = [a for a, b in zip(levels, levels[1:], strict=False) if b < a]
    assert sorted(set(jumps)) == [2, 4, 6, 8] and all(jumps.count(p) == 2 for p in (2, 4, 6, 8))
    assert steps_down == 10 + 2 * 2 * 4  # n, plus (r - 1) j for each of the 4 jump levels
    assert repaint_levels(5, 1, 1) == [0, 1, 2, 3, 4, 5]  # no resampling: the plain chain


def test_known_pixels_survive_the_png_round_trip_bit_for_bit(tmp_path):
    pipe = SimpleDDPMInpaintPipeline.from_pipe(tiny_pipeline())
    pipe.set_progress_bar_config(disable=True)
    pixels = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 1:5] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    images = pipe(
        Image.open(tmp_path / "image.png"),
        Image.open(tmp_path / "mask.png"),
        num_inference_steps=5,
        jump_length=2,
        jump_n_sample=2,
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
    ).images
    for i, result in enumerate(images):
        result.save(tmp_path / f"out{i}.png")
        out = np.asarray(Image.open(tmp_path / f"out{i}.png"))
        keep = mask == 0
        assert np.array_equal(out[keep], pixels[keep])
        assert not np.array_equal(out[~keep], pixels[~keep])  # the hole is the model's


def test_without_resampling_the_jump_length_is_not_checked():
    pipe = SimpleDDPMInpaintPipeline.from_pipe(tiny_pipeline())
    pipe.set_progress_bar_config(disable=True)
    mask = torch.zeros(8, 8)
    mask[:4] = 1
    out = pipe(torch.zeros(3, 8, 8), mask, num_inference_steps=3, jump_n_sample=1, output_type="pt").images
    assert out.shape == (1, 3, 8, 8)


def test_inpaint_pipeline_loads_from_a_saved_simple_ddpm_folder(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "model")
    pipe = SimpleDDPMInpaintPipeline.from_pretrained(tmp_path / "model")
    assert isinstance(pipe, SimpleDDPMInpaintPipeline) and isinstance(pipe, SimpleDDPMPipeline)
    assert isinstance(pipe.scheduler, SimpleDDPMScheduler)


def test_class_labels_condition_the_filled_pixels():
    """Pixels are independent given the class, so the filled ones have the class's mean whatever is kept."""
    pipe = SimpleDDPMInpaintPipeline(**mixture_pipeline().components)
    pipe.set_progress_bar_config(disable=True)
    image = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    for label, mean in enumerate(MEANS):
        out = pipe(
            image,
            mask,
            num_inference_steps=50,
            jump_length=5,
            jump_n_sample=2,
            batch_size=2000,
            class_labels=label,
            generator=torch.Generator().manual_seed(1),
            output_type="pt",
        ).images
        filled = (out * 2 - 1).flatten(1)[:, :3]
        assert abs(filled.mean().item() - mean) < 0.02, (label, filled.mean().item())


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(image=Image.new("RGB", (7, 8))), "The image is 7x8 but the model's images are 8x8"),
        (dict(mask_image=Image.new("RGB", (8, 8))), "The mask has mode 'RGB'; a mask is a grayscale image"),
        (dict(mask_image=Image.new("L", (8, 6), 255)), "The mask is 8x6 but the model's images are 8x8"),
        (dict(mask_image=Image.new("L", (8, 8), 0)), "The mask has no white pixel: nothing to fill"),
        (dict(mask_image=Image.new("L", (8, 8), 255)), "The mask is white everywhere: nothing is kept"),
        (dict(image=torch.full((3, 8, 8), 2.0)), "must lie in [-1, 1]"),
        (dict(jump_n_sample=0), "jump_n_sample must be an integer >= 1"),
        (dict(jump_length=5, jump_n_sample=2), "jump_length must be an integer in [1, 4] for 5 steps"),
        (dict(num_inference_steps=11), "num_inference_steps must be an integer in [1, 10]"),
    ],
)
def test_bad_inpainting_input_is_one_line_error(call, message):
    pipe = SimpleDDPMInpaintPipeline.from_pipe(tiny_pipeline())
    pipe.set_progress_bar_config(disable=True)
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (0, 0, 4, 4))
    kwargs = dict(image=Image.new("RGB", (8, 8)), mask_image=mask, num_inference_steps=5) | call
    with pytest.raises(ValueError) as error:
        pipe(**kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_grayscale_model_refuses_a_colour_image():
    pipe = SimpleDDPMInpaintPipeline(**mixture_pipeline().components)
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="mode 'RGB', colour, but the model is grayscale"):
        pipe(Image.new("RGB", (2, 2)), Image.new("L", (2, 2)), num_inference_steps=5)


def test_an_editing_pipeline_saves_the_folder_every_pipeline_loads(tmp_path):
    pipe = SimpleDDPMInpaintPipeline.from_pipe(tiny_pipeline())
    pipe.save_pretrained(tmp_path / "saved")
    plain = SimpleDDPMPipeline.from_pretrained(tmp_path / "saved")
    assert type(plain) is SimpleDDPMPipeline
    reloaded = SimpleDDPMInpaintPipeline.from_pretrained(tmp_path / "saved")
    for name, tensor in pipe.unet.state_dict().items():
        assert torch.equal(reloaded.unet.state_dict()[name], tensor)
