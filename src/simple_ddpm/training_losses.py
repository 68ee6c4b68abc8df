"""The training objective, per image: the mean's weighted MSE, and the bound's term L_vlb for a learned variance
(Nichol & Dhariwal 2021, sec. 3.1: L_hybrid = L_simple + lambda L_vlb), for any training loop.

    noise = torch.randn_like(x0)
    timesteps, weights = sampler.sample(len(x0), x0.device)            # simple_ddpm.timestep_samplers
    noisy = scheduler.add_noise(x0, noise, timesteps)
    losses = training_losses(scheduler, unet(noisy, timesteps).sample, x0, noisy, noise, timesteps)
    (weights * losses.loss).mean().backward()
    sampler.update_with_losses(timesteps, losses.loss)

L_vlb here is T times the bound's term at the drawn t (`SimpleDDPMScheduler.vb_terms_bpd`, bits/dim; the decoder's
L_0 at t = 1): over t ~ U{1..T}, its mean is L_0 + ... + L_{T-1}, the bound less the prior. So lambda = 0.001 at
T = 1000 weighs each term as improved-diffusion's hybrid loss does (its `RESCALED_MSE`, vb * T / 1000).
"""

from dataclasses import dataclass

import torch

from .scheduling_simple_ddpm import SimpleDDPMScheduler, _choose

LOSS_TYPES = ("mse", "vlb")
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


def training_losses(
    scheduler: SimpleDDPMScheduler,
    model_output: torch.Tensor,
    original_samples: torch.Tensor,
    noisy_samples: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    loss_type: str = "mse",
    loss_weighting: str = "simple",
    snr_gamma: float = 5.0,
    vlb_weight: float = DEFAULT_VLB_WEIGHT,
) -> TrainingLosses:
    """The loss of each image at its (x_0, eps, t), x_t = `noisy_samples` = scheduler.add_noise(x_0, eps, t).

    Args:
        scheduler (`SimpleDDPMScheduler`): its `prediction_type` and `variance_type` say what the output means.
        model_output (`torch.Tensor`): the network's output at (x_t, t): C channels, or 2C with a learned variance.
        original_samples, noisy_samples, noise (`torch.Tensor`): x_0, x_t and eps.
        timesteps (`torch.Tensor`): t per image (0-based).
        loss_type (`str`, defaults to "mse"): "mse": the mean's MSE weighted by `loss_weighting` (see
            `SimpleDDPMScheduler.loss_weights`), plus, with a learned variance, `vlb_weight` * L_vlb with the mean's
            output detached, so that L_vlb trains the variance only (L_hybrid). "vlb": L_vlb alone, through mean
            and variance (with a fixed variance it trains the mean by the true bound, decoder term included).
        loss_weighting (`str`, defaults to "simple"), snr_gamma (`float`, defaults to 5.0): the MSE's weights.
        vlb_weight (`float`, defaults to 0.001): lambda of L_hybrid.
    """
    _choose("loss_type", loss_type, LOSS_TYPES)
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

    target = scheduler.get_target(original_samples, noise, timesteps).float()
    mse = (prediction - target).pow(2).flatten(1).mean(1)
    mse = scheduler.loss_weights(timesteps, loss_weighting, snr_gamma) * mse
    if variance_values is None:
        return TrainingLosses(loss=mse, mse=mse, vlb=None)
    vlb_loss = vlb(torch.cat([prediction.detach(), variance_values], 1))
    return TrainingLosses(loss=mse + vlb_weight * vlb_loss, mse=mse, vlb=vlb_loss)
