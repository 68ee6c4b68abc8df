"""Progressive distillation (Salimans & Ho 2022, Algorithm 2): a student learns to take in one deterministic DDIM
step what its teacher takes in two, and each round halves the number of sampling steps.

Notation as in the paper, over the scheduler's table index t (see `simple_ddpm.scheduling_simple_ddpm`):
alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t), z_t = alpha_t x + sigma_t eps; after the chain's
last step comes the data, alpha = 1, sigma = 0 (index -1). The DDIM step (Song et al. 2021 eq. 12, eta = 0) from t
to s with an x-prediction x_hat is z_s = alpha_s x_hat + (sigma_s / sigma_t) (z_t - alpha_t x_hat).

Chains. With 'trailing' spacing and T = 1000 (any T divisible by the starting step count), the n-step chain is
t_k = round(T - k T / n) - 1; for a power of two n <= T, T / n is exact in binary, so the n/2-step chain is every
other timestep of the n-step one, starting at T - 1 (`halved_chain`; tested). Both ends stay where a sampler needs
them: the first step is T - 1, whose alpha_bar is closest to the N(0, I) that sampling starts from, and the last
goes to the data. 'linspace' chains are not nested and 'leading' ones never reach t = T - 1.
"""

import math
from collections.abc import Callable

import torch

from .guidance import classifier_free_guidance
from .scheduling_simple_ddpm import SimpleDDPMScheduler

DATA = -1  # the index after a chain's last step: x itself, alpha = 1, sigma = 0
# x_hat(z, t, **conditioning) of a teacher, as `teacher_target` calls it
XPrediction = Callable[..., torch.Tensor]
Coefficient = torch.Tensor | float


def trailing_timesteps(num_steps: int, num_train_timesteps: int) -> list[int]:
    """The `num_steps`-step chain that `set_timesteps` picks with timestep_spacing="trailing", decreasing."""
    scheduler = SimpleDDPMScheduler(num_train_timesteps=num_train_timesteps, timestep_spacing="trailing")
    scheduler.set_timesteps(num_steps)
    return scheduler.timesteps.tolist()


def halved_chain(chain: list[int]) -> list[int]:
    """The student's chain of a round: every other step of the teacher's, from the first (len(chain) even)."""
    if len(chain) % 2:
        raise ValueError(f"A chain of {len(chain)} steps cannot be halved; its length must be even.")
    return chain[0::2]


def distillation_chains(teacher_steps: int, num_steps: int, num_train_timesteps: int) -> list[list[int]]:
    """The chain of every round's teacher, then the final student's: the trailing `teacher_steps`-step chain
    halved until `num_steps` steps remain. `teacher_steps / num_steps` must be a power of two >= 2."""
    ratio = teacher_steps // num_steps if num_steps >= 1 else 0
    if num_steps < 1 or ratio * num_steps != teacher_steps or ratio < 2 or ratio & (ratio - 1):
        raise ValueError(
            f"--num_inference_steps {num_steps} must be the teacher's {teacher_steps} steps halved one or more "
            f"times (e.g. {', '.join(str(teacher_steps >> k) for k in range(1, 4) if teacher_steps >> k)})."
        )
    if teacher_steps > num_train_timesteps:
        raise ValueError(f"--teacher_steps {teacher_steps} exceeds the teacher's T = {num_train_timesteps}.")
    chains = [trailing_timesteps(teacher_steps, num_train_timesteps)]
    while len(chains[-1]) > num_steps:
        chains.append(halved_chain(chains[-1]))
    return chains


def alpha_sigma(
    scheduler: SimpleDDPMScheduler, timesteps: torch.Tensor, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t) per image, broadcast against `like`;
    index -1 (the data) gives alpha = 1, sigma = 0."""
    alpha_bar = scheduler.alphas_cumprod.to(like.device)[timesteps.clamp(min=0)]
    alpha_bar = torch.where(timesteps < 0, torch.ones_like(alpha_bar), alpha_bar).to(like.dtype)
    shape = (-1,) + (1,) * (like.ndim - 1)
    return alpha_bar.sqrt().view(shape), (1 - alpha_bar).sqrt().view(shape)


def ddim_step(
    z_t: torch.Tensor,
    x_hat: torch.Tensor,
    alpha_t: Coefficient,
    sigma_t: Coefficient,
    alpha_s: Coefficient,
    sigma_s: Coefficient,
) -> torch.Tensor:
    """z_s = alpha_s x_hat + (sigma_s / sigma_t) (z_t - alpha_t x_hat): DDIM's step t -> s (Song et al. eq. 12)."""
    return alpha_s * x_hat + (sigma_s / sigma_t) * (z_t - alpha_t * x_hat)


def two_step_target(
    z_t: torch.Tensor,
    z_s: torch.Tensor,
    alpha_t: Coefficient,
    sigma_t: Coefficient,
    alpha_s: Coefficient,
    sigma_s: Coefficient,
) -> torch.Tensor:
    """x~ = (z_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t): the x-prediction whose one
    DDIM step takes z_t to z_s (Salimans & Ho 2022, Algorithm 2), here z_s = the teacher's z_t''."""
    ratio = sigma_s / sigma_t
    return (z_s - ratio * z_t) / (alpha_s - ratio * alpha_t)


def truncated_snr_weight(alpha_t: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
    """w(t) = max(SNR_t, 1), SNR_t = alpha_t^2 / sigma_t^2: Salimans & Ho 2022 sec. 4, "truncated SNR"."""
    return torch.clamp(alpha_t**2 / sigma_t**2, min=1.0)


def predicted_x0(
    scheduler: SimpleDDPMScheduler, output: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """x_hat of a network's `output` at (z_t, t) under the scheduler's prediction_type, unclipped."""
    prediction, _ = scheduler.split_model_output(output, z_t)
    return scheduler.predict_original_sample(prediction, z_t, t)


def teacher_target(
    teacher: XPrediction, scheduler: SimpleDDPMScheduler, z_t: torch.Tensor, steps: torch.Tensor, **conditioning
) -> torch.Tensor:
    """x~ of a batch: `steps` (B, 3) holds t, t', t'' per image; `teacher(z, t)` returns the teacher's x_hat
    (clipped as its sampler clips). Two teacher DDIM steps t -> t' -> t'', then `two_step_target`."""
    t, t1, t2 = steps.unbind(1)
    alpha_t, sigma_t = alpha_sigma(scheduler, t, z_t)
    alpha_1, sigma_1 = alpha_sigma(scheduler, t1, z_t)
    alpha_2, sigma_2 = alpha_sigma(scheduler, t2, z_t)
    z_1 = ddim_step(z_t, teacher(z_t, t, **conditioning), alpha_t, sigma_t, alpha_1, sigma_1)
    z_2 = ddim_step(z_1, teacher(z_1, t1, **conditioning), alpha_1, sigma_1, alpha_2, sigma_2)
    return two_step_target(z_t, z_2, alpha_t, sigma_t, alpha_2, sigma_2)


def round_steps(teacher_chain: list[int], index: torch.Tensor) -> torch.Tensor:
    """(t, t', t'') for student step `index` of a round: the teacher's steps 2i, 2i+1 and 2i+2 (`DATA` after the
    last), shape (B, 3)."""
    padded = torch.tensor(list(teacher_chain) + [DATA], device=index.device)
    return torch.stack([padded[2 * index], padded[2 * index + 1], padded[2 * index + 2]], 1)


def teacher_x0(
    unet: torch.nn.Module,
    scheduler: SimpleDDPMScheduler,
    clip: bool,
    guidance_scale: float = 0.0,
    null_label: int | None = None,
) -> XPrediction:
    """x_hat(z, t) of a teacher network, clipped as its sampler clips it (`clip`). With `guidance_scale` w != 0 (a
    class-conditional teacher, `null_label` its no-label token) x_hat of the guided output (1 + w) out(z, t, y) -
    w out(z, t, no label), classifier-free guidance as the pipeline samples it: the target of Meng et al. 2023
    ("On distillation of guided diffusion models"), whose student then draws guided samples without guidance."""
    if guidance_scale and null_label is None:
        raise ValueError("Guiding the teacher needs its no-label token (null_label).")

    def predict(z: torch.Tensor, t: torch.Tensor, **conditioning) -> torch.Tensor:
        output = unet(z, t, **conditioning).sample
        if guidance_scale:
            labels = conditioning.get("class_labels")
            if labels is None:
                raise ValueError("A guided teacher needs the images' class_labels.")
            unconditional = unet(z, t, class_labels=torch.full_like(labels, null_label)).sample
            output = classifier_free_guidance(output, unconditional, guidance_scale)
        x_hat = predicted_x0(scheduler, output.to(z.dtype), z, t)
        return scheduler.clip_predicted_x0(x_hat) if clip else x_hat

    return predict


def distillation_loss(
    student: torch.nn.Module,
    teacher: XPrediction,
    scheduler: SimpleDDPMScheduler,
    teacher_chain: list[int],
    x0: torch.Tensor,
    labels: torch.Tensor | None,
) -> torch.Tensor:
    """Salimans & Ho 2022 Algorithm 2 on a batch: t from the student's chain, z_t ~ q(z_t | x), the teacher's
    two-step target x~ and the student's x_hat, w(t) ||x~ - x_hat||^2 / d with w = max(SNR_t, 1)."""
    conditioning = {} if labels is None else {"class_labels": labels}
    index = torch.randint(0, len(teacher_chain) // 2, (len(x0),), device=x0.device)
    steps = round_steps(teacher_chain, index)
    t = steps[:, 0]
    z_t = scheduler.add_noise(x0, torch.randn_like(x0), t)
    with torch.no_grad():
        target = teacher_target(teacher, scheduler, z_t, steps, **conditioning)
    x_hat = predicted_x0(scheduler, student(z_t, t, **conditioning).sample.to(z_t.dtype), z_t, t)
    weight = truncated_snr_weight(*alpha_sigma(scheduler, t, z_t)).flatten()
    return (weight * (target - x_hat).pow(2).flatten(1).mean(1)).mean()


def distilled_sampling(
    scheduler: object, num_inference_steps: int | None, eta: float | None
) -> tuple[dict[str, object], float | None]:
    """The `set_timesteps` arguments and eta of a pipeline call: a distilled scheduler (`distilled_timesteps` in
    its config) samples its own chain at eta = 0 by default; another step count is refused. Otherwise
    `num_inference_steps` (default 1000) and `eta` as given."""
    chain = getattr(scheduler.config, "distilled_timesteps", None)
    if chain is None:
        return {"num_inference_steps": 1000 if num_inference_steps is None else num_inference_steps}, eta
    if num_inference_steps not in (None, len(chain)):
        raise ValueError(
            f"This is a {len(chain)}-step distilled model; it samples its own {len(chain)} timesteps only (leave "
            f"num_inference_steps unset), got num_inference_steps={num_inference_steps}."
        )
    return {"timesteps": list(chain)}, 0.0 if eta is None else eta


def paired_distance(first: torch.Tensor, second: torch.Tensor) -> float:
    """Root mean square difference of two image batches in [-1, 1] pixels: images from the same x_T compared."""
    return math.sqrt(torch.mean((first.double() - second.double()) ** 2).item())
