"""The training objective in one place: targets, per-timestep weights, the per-image losses and the loss of a
training step (Ho et al. 2020 Algorithm 1; Nichol & Dhariwal 2021, sec. 3.1: L_hybrid = L_simple + lambda L_vlb).

    loss = diffusion_loss(unet, scheduler, x0, loss_weighting="simple", timestep_sampler=sampler)
    loss.backward()

L_vlb here is T times the bound's term at the drawn t (`SimpleDDPMScheduler.vb_terms_bpd`, bits/dim; the decoder's
L_0 at t = 1): over t ~ U{1..T}, its mean is L_0 + ... + L_{T-1}, the bound less the prior. So lambda = 0.001 at
T = 1000 weighs each term as improved-diffusion's hybrid loss does (its `RESCALED_MSE`, vb * T / 1000).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .ddpm_chain import choose, table_dtype
from .timestep_samplers import LossSecondMomentSampler, UniformSampler

LOSS_TYPES = ("mse", "vlb")
LOSS_WEIGHTINGS = ("simple", "elbo", "min_snr", "p2")
DEFAULT_VLB_WEIGHT = 0.001  # lambda of Nichol & Dhariwal's L_hybrid


@dataclass
class TrainingLosses:
    """Per-image losses, each of shape (batch,).

    Args:
        loss (`torch.Tensor`): what to minimise, before importance weights.
        mse (`torch.Tensor` or None): w(t) * mean((prediction - target)^2) of the mean's C channels; None for "vlb".
        vlb (`torch.Tensor` or None): L_vlb = T * (the bound's term at t) in bits/dim; None when not computed (a
            fixed variance under "mse", where it would train nothing).
    """

    loss: torch.Tensor
    mse: torch.Tensor | None
    vlb: torch.Tensor | None


def training_target(
    scheduler: SchedulerMixin, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the network should output for x_t = add_noise(x_0, eps, t): eps, x_0 or v by `prediction_type`."""
    if scheduler.config.prediction_type == "epsilon":
        return noise
    if scheduler.config.prediction_type == "sample":
        return original_samples
    return scheduler.get_velocity(original_samples, noise, timesteps)


def signal_to_noise_ratio(scheduler: SchedulerMixin, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR(t) = alpha_bar_t / (1 - alpha_bar_t) on the timesteps' device, float64 where the device has it."""
    t = timesteps.long()
    alpha_bar = scheduler.full_chain.gather("alpha_bar", t, _scalar_like(t))
    return alpha_bar / (1 - alpha_bar)


def _scalar_like(timesteps: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor in the table dtype of the timesteps' device: the `like` of a per-timestep gather."""
    return torch.empty((), dtype=table_dtype(timesteps.device), device=timesteps.device)


def loss_weights(
    scheduler: SchedulerMixin,
    timesteps: torch.Tensor,
    weighting: str = "simple",
    snr_gamma: float = 5.0,
    p2_gamma: float = 1.0,
    p2_k: float = 1.0,
) -> torch.Tensor:
    """Per-sample weights w(t) of w(t) * mean((model_output - target)^2), float32 on the timesteps' device.

    "simple": 1 (Ho et al.'s L_simple). "elbo": the weight that makes it the KL term of the bound per dimension in
    nats (Ho et al. eq. 5, 8-12): beta_t^2 alpha_bar_{t-1} / (2 s^2 (1 - alpha_bar_t)^2) for x_0, beta_t^2 /
    (2 s^2 (1 - alpha_bar_t) alpha_t) for eps, the x_0 weight times (1 - alpha_bar_t) for v; s^2 the model's
    variance (a learned one: that of "fixed_small"). "min_snr": min(SNR, gamma) on x_0 (Hang et al. 2023), i.e.
    min(SNR, gamma) / SNR for eps (1 where SNR = 0) and min(SNR, gamma) / (SNR + 1) for v. "p2": 1 / (k + SNR)^gamma
    on eps (Choi et al. 2022 eq. 8, `p2_k`, `p2_gamma`), i.e. SNR / (k + SNR)^gamma on x_0 and that / (SNR + 1) on v.
    """
    choose("loss weighting", weighting, LOSS_WEIGHTINGS)
    prediction_type = scheduler.config.prediction_type
    t = timesteps.long()
    if weighting == "simple":
        return torch.ones(t.shape, device=t.device)
    if weighting == "min_snr":
        snr = signal_to_noise_ratio(scheduler, t)
        clipped = snr.clamp(max=snr_gamma)
        epsilon = torch.where(snr > 0, clipped / snr, torch.ones_like(snr))
        weights = {"epsilon": epsilon, "sample": clipped, "v_prediction": clipped / (snr + 1)}
        return weights[prediction_type].float()
    if weighting == "p2":
        snr = signal_to_noise_ratio(scheduler, t)
        epsilon = (p2_k + snr) ** -p2_gamma
        weights = {"epsilon": epsilon, "sample": epsilon * snr, "v_prediction": epsilon * snr / (snr + 1)}
        return weights[prediction_type].float()
    scheduler.check_bound_is_defined()
    like = _scalar_like(t)
    beta, alpha_bar, alpha_bar_prev, log_variance = (
        scheduler.full_chain.gather(name, t, like)
        for name in ("beta", "alpha_bar", "alpha_bar_prev", "model_log_variance")
    )
    alpha = 1.0 - beta
    variance = log_variance.exp()
    weight_x0 = beta**2 * alpha_bar_prev / (2 * variance * (1 - alpha_bar) ** 2)
    weights = {
        "sample": weight_x0,
        "epsilon": beta**2 / (2 * variance * (1 - alpha_bar) * alpha),
        "v_prediction": weight_x0 * (1 - alpha_bar),
    }
    return weights[prediction_type].float()


def training_losses(
    scheduler: SchedulerMixin,
    model_output: torch.Tensor,
    original_samples: torch.Tensor,
    noisy_samples: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    loss_type: str = "mse",
    loss_weighting: str = "simple",
    snr_gamma: float = 5.0,
    p2_gamma: float = 1.0,
    p2_k: float = 1.0,
    vlb_weight: float = DEFAULT_VLB_WEIGHT,
) -> TrainingLosses:
    """The loss of each image at its (x_0, eps, t), x_t = `noisy_samples` = scheduler.add_noise(x_0, eps, t).

    Args:
        scheduler (`SimpleDDPMScheduler`): its `prediction_type` and `variance_type` say what the output means.
        model_output (`torch.Tensor`): the network's output at (x_t, t): C channels, or 2C with a learned variance.
        original_samples, noisy_samples, noise (`torch.Tensor`): x_0, x_t and eps.
        timesteps (`torch.Tensor`): t per image (0-based).
        loss_type (`str`, defaults to "mse"): "mse": the mean's MSE weighted by `loss_weighting` (see
            `loss_weights`), plus, with a learned variance, `vlb_weight` * L_vlb with the mean's output detached,
            so that L_vlb trains the variance only (L_hybrid). "vlb": L_vlb alone, through mean and variance (with a
            fixed variance it trains the mean by the true bound, decoder term included).
        loss_weighting (`str`, defaults to "simple"), snr_gamma (`float`, defaults to 5.0), p2_gamma and p2_k
            (`float`, default to 1.0): the MSE's weights (`loss_weights`).
        vlb_weight (`float`, defaults to 0.001): lambda of L_hybrid.
    """
    choose("loss_type", loss_type, LOSS_TYPES)
    if vlb_weight < 0:
        raise ValueError(f"vlb_weight must be >= 0, got {vlb_weight}.")
    output = model_output.float()
    prediction, variance_values = scheduler.split_model_output(output, original_samples)
    T = scheduler.config.num_train_timesteps

    def vlb(model_output: torch.Tensor) -> torch.Tensor:
        # no clipping of x0_hat: clipping would cut the gradient where the prediction leaves [-1, 1]
        bits = scheduler.vb_terms_bpd(
            model_output, original_samples.float(), noisy_samples.float(), timesteps, clip_sample=False
        )
        return T * bits

    if loss_type == "vlb":
        vlb_loss = vlb(output)
        return TrainingLosses(loss=vlb_loss, mse=None, vlb=vlb_loss)

    target = training_target(scheduler, original_samples, noise, timesteps).float()
    mse = (prediction - target).pow(2).flatten(1).mean(1)
    mse = loss_weights(scheduler, timesteps, loss_weighting, snr_gamma, p2_gamma, p2_k) * mse
    if variance_values is None:
        return TrainingLosses(loss=mse, mse=mse, vlb=None)
    vlb_loss = vlb(torch.cat([prediction.detach(), variance_values], 1))
    return TrainingLosses(loss=mse + vlb_weight * vlb_loss, mse=mse, vlb=vlb_loss)


def diffusion_loss(
    unet: torch.nn.Module,
    scheduler: SchedulerMixin,
    x0: torch.Tensor,
    *,
    loss_weighting: str = "simple",
    snr_gamma: float = 5.0,
    p2_gamma: float = 1.0,
    p2_k: float = 1.0,
    loss_type: str = "mse",
    vlb_weight: float = DEFAULT_VLB_WEIGHT,
    timestep_sampler: UniformSampler | None = None,
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor,
    class_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of one training step on the batch `x0` (Ho et al. Algorithm 1 with Nichol & Dhariwal's objective).

    eps ~ N(0, I), t from `timestep_sampler` (uniform by default), each image's loss (`training_losses`) weighted by
    1 / (T p_t). An importance sampler learns from every process's losses (`gather` collects them across
    processes). A class-conditional UNet sees `class_labels` (after label dropout).
    """
    sampler = timestep_sampler or UniformSampler(scheduler.config.num_train_timesteps)
    noise = torch.randn_like(x0)
    timesteps, weights = sampler.sample(x0.shape[0], x0.device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    conditioning = {} if class_labels is None else {"class_labels": class_labels}
    model_output = unet(noisy, timesteps, **conditioning).sample
    losses = training_losses(
        scheduler, model_output, x0, noisy, noise, timesteps,
        loss_type=loss_type, loss_weighting=loss_weighting, snr_gamma=snr_gamma, p2_gamma=p2_gamma, p2_k=p2_k,
        vlb_weight=vlb_weight,
    )  # fmt: skip
    if isinstance(sampler, LossSecondMomentSampler):
        sampler.update_with_losses(gather(timesteps), gather(losses.loss.detach()))
    return (weights * losses.loss).mean()
