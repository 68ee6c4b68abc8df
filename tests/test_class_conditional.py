"""Class-conditional sampling, classifier-free guidance and the conditional bound, against exact denoisers of a
two-class Gaussian mixture."""

import json

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from tiny_pipeline import tiny_pipeline, tiny_unet

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.guidance import classifier_free_guidance

MEANS = (-0.2, 0.2)  # class y: every pixel of x_0 ~ N(MEANS[y], STD^2), independently
STD = 0.2


class GaussianClassDenoiser(ModelMixin, ConfigMixin):
    """The exact network of the mixture: for class y, q(x_t | y) = N(sqrt(a) mu_y, a s^2 + 1 - a) per pixel, so
    eps(x_t, y) = sqrt(1 - a) (x_t - sqrt(a) mu_y) / (a s^2 + 1 - a); with the no-label token (index K), the
    mixture's eps = sum_y p(y | x_t) eps(x_t, y), both classes equally likely. Output as `prediction_type` asks."""

    @register_to_config
    def __init__(
        self,
        alphas_cumprod: list[float],
        sample_size: int = 2,
        in_channels: int = 1,
        num_class_embeds: int = 3,
        prediction_type: str = "epsilon",
    ):
        super().__init__()
        self.register_buffer("alpha_bar", torch.tensor(alphas_cumprod, dtype=torch.float64))

    def class_eps(self, sample: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """(K, B, C, H, W): eps(x_t, y) for every class y."""
        means = torch.tensor(MEANS, dtype=sample.dtype).view(-1, 1, 1, 1, 1)
        return (1 - a).sqrt() * (sample - a.sqrt() * means) / (a * STD**2 + 1 - a)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor) -> UNet2DOutput:
        x = sample.double()
        timestep = torch.as_tensor(timestep, device=sample.device).expand(len(sample))
        a = self.alpha_bar[timestep].view(-1, 1, 1, 1)
        eps = self.class_eps(x, a)
        means = torch.tensor(MEANS, dtype=x.dtype).view(-1, 1, 1, 1, 1)
        log_likelihood = (-((x - a.sqrt() * means) ** 2) / (2 * (a * STD**2 + 1 - a))).flatten(2).sum(-1)
        responsibility = log_likelihood.softmax(0).view(len(MEANS), -1, 1, 1, 1)  # p(y | x_t)
        mixture_eps = (responsibility * eps).sum(0)
        index = class_labels.clamp(max=len(MEANS) - 1)
        chosen = eps[index, torch.arange(len(x))]
        out = torch.where((class_labels == len(MEANS)).view(-1, 1, 1, 1), mixture_eps, chosen)
        if self.config.prediction_type == "sample":
            out = (x - (1 - a).sqrt() * out) / a.sqrt()
        elif self.config.prediction_type == "v_prediction":
            out = a.sqrt() * out - (1 - a).sqrt() * (x - (1 - a).sqrt() * out) / a.sqrt()
        return UNet2DOutput(sample=out.to(sample.dtype))


class LabelBakedIn(ModelMixin, ConfigMixin):
    """An unconditional network: the conditional one with its label fixed to `label`."""

    @register_to_config
    def __init__(self, sample_size: int = 2, in_channels: int = 1):
        super().__init__()

    def bake(self, network: torch.nn.Module, label: int) -> "LabelBakedIn":
        self.network, self.label = network, label
        return self

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> UNet2DOutput:
        labels = torch.full((len(sample),), self.label, dtype=torch.long)
        return self.network(sample, timestep, class_labels=labels)


def mixture_pipeline(num_train_timesteps=50, prediction_type="epsilon") -> SimpleDDPMPipeline:
    scheduler = SimpleDDPMScheduler(
        num_train_timesteps=num_train_timesteps, beta_end=0.2, clip_sample=False, prediction_type=prediction_type
    )
    unet = GaussianClassDenoiser(scheduler.alphas_cumprod.tolist(), prediction_type=prediction_type)
    pipe = SimpleDDPMPipeline(unet=unet, scheduler=scheduler, class_names=["left", "right"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ancestral_coefficients(pipe: SimpleDDPMPipeline):
    """Per t = T-1..0, in float64 from the betas (Ho et al. eq. 6-7): sqrt(a_t), a_t, and the posterior's
    coef_x0 = sqrt(abar_{t-1}) beta_t / (1 - abar_t), coef_xt = sqrt(alpha_t)(1 - abar_{t-1}) / (1 - abar_t),
    variance (1 - abar_{t-1}) beta_t / (1 - abar_t)."""
    betas = pipe.scheduler.betas.double()
    alpha_bar = torch.cumprod(1 - betas, 0)
    for t in reversed(range(len(betas))):
        prev = alpha_bar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
        a, beta = alpha_bar[t], betas[t]
        yield t, a, prev.sqrt() * beta / (1 - a), (1 - beta).sqrt() * (1 - prev) / (1 - a), (1 - prev) * beta / (1 - a)


def class_distribution_by_recursion(pipe: SimpleDDPMPipeline, mean: float) -> tuple[float, float]:
    """Mean and variance of a pixel sampled for the class of mean `mu`: x0_hat is affine in x_t for a Gaussian,
    so each ancestral step maps N(m, v) to N(c m + d, c^2 v + sigma^2) exactly."""
    m, v = 0.0, 1.0
    for _, a, coef_x0, coef_xt, variance in ancestral_coefficients(pipe):
        # x0_hat = (x_t - sqrt(1 - a) eps) / sqrt(a), eps = sqrt(1 - a)(x_t - sqrt(a) mu) / (a s^2 + 1 - a)
        k = (1 - a) / (a * STD**2 + 1 - a)
        x0_slope, x0_offset = (1 - k) / a.sqrt(), k * mean
        c, d = coef_x0 * x0_slope + coef_xt, coef_x0 * x0_offset
        m, v = c * m + d, c**2 * v + variance
    return float(m), float(v)


def guided_by_hand(pipe: SimpleDDPMPipeline, label: int, w: float, n: int, seed: int) -> torch.Tensor:
    """Ancestral sampling written out in float64, with eps~ = (1 + w) eps(x, y) - w eps(x, none)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 2, 2, generator=generator, dtype=torch.float64)
    unet = pipe.unet
    for t, a, coef_x0, coef_xt, variance in ancestral_coefficients(pipe):
        timestep = torch.tensor(t)
        eps_y = unet(x, timestep, class_labels=torch.full((n,), label)).sample
        eps_none = unet(x, timestep, class_labels=torch.full((n,), len(MEANS))).sample
        eps = (1 + w) * eps_y - w * eps_none
        x0_hat = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = coef_x0 * x0_hat + coef_xt * x + variance.sqrt() * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x


def sample(pipe: SimpleDDPMPipeline, seed: int = 0, **kwargs) -> torch.Tensor:
    images = pipe(generator=torch.Generator().manual_seed(seed), output_type="pt", num_inference_steps=50, **kwargs)
    return images[0].double() * 2 - 1


def test_unguided_samples_of_each_class_follow_the_exact_gaussian_recursion():
    pipe = mixture_pipeline()
    n = 1000
    samples = sample(pipe, class_labels=[0] * n + [1] * n)
    for label, pixels in enumerate((samples[:n], samples[n:])):
        mean, variance = class_distribution_by_recursion(pipe, MEANS[label])
        # close to the data, but at T = 50 the reverse variance sigma_t^2 = beta~_t under-disperses by about 30%
        assert abs(mean - MEANS[label]) < 0.01 and abs(variance - STD**2) < 0.4 * STD**2
        pixels = pixels.flatten()
        assert abs(pixels.mean().item() - mean) < 4 * (variance / len(pixels)) ** 0.5
        # var of a sample variance: 2 v^2 / (N - 1) for a Gaussian
        assert abs(pixels.var().item() - variance) < 4 * variance * (2 / (len(pixels) - 1)) ** 0.5


def test_no_label_samples_the_mixture_of_both_classes():
    pipe = mixture_pipeline()
    n = 1000
    samples = sample(pipe, batch_size=n)
    in_right = (samples.flatten(1).mean(1) > 0).double().mean().item()
    assert abs(in_right - 0.5) < 4 * (0.25 / n) ** 0.5  # binomial(n, 1/2)
    means = [class_distribution_by_recursion(pipe, mu) for mu in MEANS]
    mixture_variance = sum(v + m**2 for m, v in means) / 2
    pixels = samples.flatten()
    assert abs(pixels.mean().item()) < 4 * (mixture_variance / n) ** 0.5  # images, not pixels, are independent
    assert abs(pixels.var().item() - mixture_variance) < 0.02


@pytest.mark.parametrize("w", [1.0, 3.0])
def test_guided_samples_follow_the_guided_formula_and_move_away_from_the_other_class(w):
    pipe = mixture_pipeline()
    n = 1000
    guided = sample(pipe, class_labels="right", batch_size=n, guidance_scale=w, seed=1).flatten()
    by_hand = guided_by_hand(pipe, 1, w, n, seed=2).flatten()
    unguided_mean, unguided_variance = class_distribution_by_recursion(pipe, MEANS[1])
    standard_error = ((guided.var() + by_hand.var()) / n).sqrt().item()  # images are independent, not pixels
    assert abs(guided.mean().item() - by_hand.mean().item()) < 4 * standard_error
    assert abs(guided.var().item() - by_hand.var().item()) < 0.25 * by_hand.var().item()
    # guidance pushes class 1 (right) further right, away from the mean of p(x)
    assert by_hand.mean().item() > unguided_mean + 5 * standard_error
    assert guided.mean().item() > unguided_mean + 5 * standard_error


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_guiding_x0_or_v_linearly_equals_guiding_eps(prediction_type):
    labels = [0, 1, 1, 0]
    reference = sample(mixture_pipeline(), class_labels=labels, guidance_scale=2.0)
    other = sample(mixture_pipeline(prediction_type=prediction_type), class_labels=labels, guidance_scale=2.0)
    torch.testing.assert_close(other, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("w, per_call", [(0.0, [1, 0]), (2.0, [1, 0, 2, 2])])
def test_guidance_is_one_network_call_on_the_labels_and_the_no_label_token(w, per_call):
    pipe = mixture_pipeline()
    batches, forward = [], pipe.unet.forward

    def counted(sample, timestep, class_labels):
        batches.append(class_labels.tolist())
        return forward(sample, timestep, class_labels)

    pipe.unet.forward = counted
    pipe(class_labels=["right", "left"], guidance_scale=w, num_inference_steps=5, output_type="pt")
    assert batches == [per_call] * 5


def baked_bound(pipe: SimpleDDPMPipeline, label: int, images: torch.Tensor) -> torch.Tensor:
    baked = SimpleDDPMPipeline(unet=LabelBakedIn().bake(pipe.unet, label), scheduler=pipe.scheduler)
    baked.set_progress_bar_config(disable=True)
    return baked.elbo(images, generator=torch.Generator().manual_seed(3)).bits_per_dim


def test_conditional_bound_equals_the_unconditional_bound_of_the_network_with_the_label_baked_in():
    pipe = mixture_pipeline(num_train_timesteps=20)
    centers = torch.tensor([-0.5, -0.5, 0.5, 0.5]).view(-1, 1, 1, 1)
    images = centers + STD * torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    images = ((images + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1

    def bound(class_labels):
        return pipe.elbo(images, generator=torch.Generator().manual_seed(3), class_labels=class_labels).bits_per_dim

    expected = {label: baked_bound(pipe, label, images) for label in (0, 1, 2)}  # 2: the no-label token
    torch.testing.assert_close(bound(0), expected[0])
    torch.testing.assert_close(bound("right"), expected[1])
    torch.testing.assert_close(bound(None), expected[2])  # the bound on p(x)
    labels = [0, 1, 1, 2]  # per image, the no-label token by index in the tensor form
    mixed = bound(torch.tensor(labels))
    torch.testing.assert_close(mixed, torch.stack([expected[label][i] for i, label in enumerate(labels)]))
    # an image is likelier under its own class than under the other one, and under p(x) in between
    assert (expected[0][:2] < expected[2][:2]).all() and (expected[2][:2] < expected[1][:2]).all()
    assert (expected[1][2:] < expected[2][2:]).all() and (expected[2][2:] < expected[0][2:]).all()


def conditional_unet(num_classes=2) -> UNet2DModel:
    return tiny_unet(channels=1, num_class_embeds=num_classes + 1)


def test_class_names_survive_save_and_load_and_select_the_same_class_as_the_index(tmp_path):
    pipe = SimpleDDPMPipeline(
        unet=conditional_unet(), scheduler=SimpleDDPMScheduler(num_train_timesteps=10), class_names=["cat", "dog"]
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["class_names"] == ["cat", "dog"]
    loaded = SimpleDDPMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.class_names == ["cat", "dog"] and loaded.num_classes == 2
    by_name = loaded(
        class_labels=["dog", "cat"],
        guidance_scale=1.5,
        num_inference_steps=3,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    )[0]
    by_index = pipe(
        class_labels=[1, 0],
        guidance_scale=1.5,
        num_inference_steps=3,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    )[0]
    torch.testing.assert_close(by_name, by_index)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_labels": [0, 3]}, "Class label 3 is out of range; valid labels are 0..1 (2: no label)."),
        ({"class_labels": -1}, "Class label -1 is out of range"),
        ({"class_labels": "bird"}, "Unknown class name 'bird'; valid names are: cat, dog."),
        ({"class_labels": [0, 1], "batch_size": 3}, "Got 2 class_labels for 3 images"),
        ({"class_labels": torch.tensor([0.0, 1.0])}, "class_labels must be integers"),
        ({"class_labels": 0.5}, "A class label is an int or a class name, got 0.5."),
        ({"guidance_scale": 2.0}, "guidance_scale needs class_labels"),
        ({"class_labels": 0, "guidance_scale": -1.0}, "guidance_scale must be a finite number >= 0"),
    ],
)
def test_bad_class_labels_or_guidance_are_one_clear_error(kwargs, message):
    pipe = SimpleDDPMPipeline(
        unet=conditional_unet(), scheduler=SimpleDDPMScheduler(num_train_timesteps=10), class_names=["cat", "dog"]
    )
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        pipe(num_inference_steps=2, output_type="pt", **kwargs)


def test_class_labels_on_an_unconditional_model_is_an_error():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="class_labels were given but this model is unconditional"):
        pipe(class_labels=[0], num_inference_steps=2)
    with pytest.raises(ValueError, match="class_labels were given but this model is unconditional"):
        pipe.elbo(torch.zeros(1, 3, 8, 8), class_labels=0)


def test_class_names_must_fit_the_unet():
    scheduler = SimpleDDPMScheduler(num_train_timesteps=10)
    with pytest.raises(ValueError, match="Got 3 class_names for a UNet with num_class_embeds=3"):
        SimpleDDPMPipeline(unet=conditional_unet(), scheduler=scheduler, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="the UNet is unconditional"):
        SimpleDDPMPipeline(unet=tiny_unet(), scheduler=scheduler, class_names=["a"])


def test_a_conditional_model_without_names_takes_indices_and_refuses_names():
    pipe = SimpleDDPMPipeline(unet=conditional_unet(3), scheduler=SimpleDDPMScheduler(num_train_timesteps=10))
    assert pipe.class_label_tensor([2, 0], 2).tolist() == [2, 0]
    assert pipe.class_label_tensor(list(np.array([1, 2])), 2).tolist() == [1, 2]
    assert pipe.class_label_tensor(None, 2).tolist() == [3, 3]  # the no-label token
    with pytest.raises(ValueError, match=r"this model has no class names; pass an index in \[0, 3\)"):
        pipe.class_label_tensor("cat", 1)


def test_guidance_combines_the_prediction_channels_and_keeps_the_conditional_variance_channels():
    generator = torch.Generator().manual_seed(0)
    conditional, unconditional = torch.randn(2, 4, 6, 2, 2, generator=generator, dtype=torch.float64)
    w = 2.5
    guided = classifier_free_guidance(conditional, unconditional, w, channels=3)
    expected = torch.cat([(1 + w) * conditional[:, :3] - w * unconditional[:, :3], conditional[:, 3:]], dim=1)
    torch.testing.assert_close(guided, expected)
    torch.testing.assert_close(classifier_free_guidance(conditional, unconditional, 0.0), conditional)


def test_guided_sampling_with_a_learned_variance_equals_the_scheduler_steps_on_the_guided_output():
    unet = tiny_unet(channels=1, out_channels=2, num_class_embeds=3)
    scheduler = SimpleDDPMScheduler(num_train_timesteps=10, beta_end=0.2, variance_type="learned_range")
    pipe = SimpleDDPMPipeline(unet=unet, scheduler=scheduler, class_names=["a", "b"])
    pipe.set_progress_bar_config(disable=True)
    w, labels = 2.0, torch.tensor([1, 0])
    images = pipe(class_labels=["b", "a"], guidance_scale=w, num_inference_steps=4, output_type="pt",
                  generator=torch.Generator().manual_seed(0))[0]  # fmt: skip

    generator = torch.Generator().manual_seed(0)  # the pipeline's draws: x_T, then each step's noise
    x = torch.randn(2, 1, 8, 8, generator=generator)
    scheduler.set_timesteps(4)
    with torch.no_grad():
        for t in scheduler.timesteps:
            conditional = unet(x, t, class_labels=labels).sample
            unconditional = unet(x, t, class_labels=torch.full((2,), 2)).sample
            guided_mean = (1 + w) * conditional[:, :1] - w * unconditional[:, :1]
            output = torch.cat([guided_mean, conditional[:, 1:]], dim=1)  # the variance: the conditional one's
            x = scheduler.step(output, t, x, generator=generator).prev_sample
    torch.testing.assert_close(images, (x / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)
