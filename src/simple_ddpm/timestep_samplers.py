"""Which timesteps a training batch draws: uniform (Ho et al. 2020); importance-sampled by the loss's second
moment (Nichol & Dhariwal 2021, sec. 3.3, eq. 18) with weights that keep the objective unbiased; or log-normal in
the noise level (Karras et al. 2022, sec. 5), which changes the objective on purpose.

A training loop draws ``timesteps, weights = sampler.sample(batch_size, device)``, minimises
``(weights * per_image_loss).mean()``, and reports ``sampler.update_with_losses(timesteps, per_image_loss)``.
E_{t ~ p}[w_t L_t] = sum_t p_t L_t / (T p_t) = (1/T) sum_t L_t: the same objective as uniform draws, with less
variance when p_t follows the size of L_t. With several processes, report the losses of all of them (gathered), so
that every process keeps the same history.
"""

import math

import torch

TIMESTEP_SAMPLINGS = ("uniform", "importance", "log_normal")
LOG_NORMAL_MEAN = -1.2  # EDM's P_mean and P_std (Karras et al. 2022, Table 1), for data in [-1, 1]
LOG_NORMAL_STD = 1.2


class UniformSampler:
    """t ~ U{0, ..., T-1}, every weight 1.

    Args:
        num_train_timesteps (`int`): T.
    """

    def __init__(self, num_train_timesteps: int):
        self.num_train_timesteps = num_train_timesteps

    def probabilities(self) -> torch.Tensor:
        """p_t, float64 of shape (T,)."""
        return torch.full((self.num_train_timesteps,), 1 / self.num_train_timesteps, dtype=torch.float64)

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch_size` timesteps (long) and their weights 1 / (T p_t) (float32), on `device`."""
        timesteps = torch.randint(0, self.num_train_timesteps, (batch_size,), device=device, generator=generator)
        return timesteps, torch.ones(batch_size, device=device)

    def warmed_up(self) -> bool:
        """Whether draws follow the losses (never, for uniform draws)."""
        return False

    def update_with_losses(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Uniform draws ignore the losses."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"A uniform timestep sampler has no state; got {sorted(state)}.")


class LossSecondMomentSampler(UniformSampler):
    """p_t proportional to sqrt(E[L_t^2]) over the last `history_per_term` losses at t, mixed with a share
    `uniform_prob` of uniform draws so that no t is starved; uniform until every t has a full history
    (improved-diffusion's `LossSecondMomentResampler`).

    Args:
        num_train_timesteps (`int`): T.
        history_per_term (`int`, defaults to 10): losses remembered per timestep.
        uniform_prob (`float`, defaults to 0.001): the uniform share of p.
    """

    def __init__(self, num_train_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_train_timesteps)
        if history_per_term < 1 or not 0 < uniform_prob <= 1:
            raise ValueError(
                f"history_per_term must be >= 1 and uniform_prob in (0, 1], got {history_per_term}, {uniform_prob}."
            )
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self.loss_history = torch.zeros(num_train_timesteps, history_per_term, dtype=torch.float64)
        self.loss_counts = torch.zeros(num_train_timesteps, dtype=torch.long)

    def warmed_up(self) -> bool:
        """Whether every timestep has a full history (before that, draws are uniform)."""
        return bool((self.loss_counts == self.history_per_term).all())

    def probabilities(self) -> torch.Tensor:
        if not self.warmed_up():
            return super().probabilities()
        p = self.loss_history.pow(2).mean(-1).sqrt()
        p = p / p.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / self.num_train_timesteps

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.warmed_up():
            return super().sample(batch_size, device, generator)
        p = self.probabilities()
        timesteps = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1 / (self.num_train_timesteps * p[timesteps])
        return timesteps.to(device), weights.float().to(device)

    def update_with_losses(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each loss to its timestep's history, the oldest value dropping out of a full one."""
        for t, loss in zip(timesteps.tolist(), losses.detach().double().tolist(), strict=True):
            count = int(self.loss_counts[t])
            if count == self.history_per_term:
                self.loss_history[t] = torch.roll(self.loss_history[t], -1)
                self.loss_history[t, -1] = loss
            else:
                self.loss_history[t, count] = loss
                self.loss_counts[t] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        history, counts = state.get("loss_history"), state.get("loss_counts")
        if history is None or counts is None or history.shape != self.loss_history.shape:
            shape = None if history is None else tuple(history.shape)
            raise ValueError(
                f"The saved loss history does not fit T = {self.num_train_timesteps} with {self.history_per_term} "
                f"losses per timestep (loss_history of shape {shape})."
            )
        self.loss_history = history.double().clone()
        self.loss_counts = counts.long().clone()


class LogNormalSampler(UniformSampler):
    """ln sigma_t ~ N(mean, std^2), EDM's training noise distribution (Karras et al. 2022, sec. 5, "noise
    distribution"), on the discrete timesteps of a variance-preserving schedule: z_t / alpha_t = x_0 + sigma_t eps
    with sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), which grows with t, so p_t is the normal's mass on t's
    interval of ln sigma (from the midpoint to the previous timestep's to the midpoint to the next's; the first and
    last intervals open). Every weight is 1: unlike importance sampling the draws reweight the objective, each
    timestep's loss by T p_t, which is the point (EDM spends its training on the middle noise levels, where the
    loss can still be reduced, rather than on t near T, where the prediction is nearly the data mean).

    Args:
        alphas_cumprod (`torch.Tensor`): alpha_bar_t of the T training timesteps (the scheduler's).
        mean (`float`, defaults to -1.2): the mean of ln sigma (EDM's P_mean).
        std (`float`, defaults to 1.2): its standard deviation (EDM's P_std), > 0.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, mean: float = LOG_NORMAL_MEAN, std: float = LOG_NORMAL_STD):
        super().__init__(len(alphas_cumprod))
        if not std > 0 or not math.isfinite(mean) or not math.isfinite(std):
            raise ValueError(f"The log-normal timestep sampling needs a finite mean and std > 0, got {mean}, {std}.")
        self.mean, self.std = mean, std
        alpha_bar = alphas_cumprod.double().cpu()
        log_sigma = 0.5 * (torch.log1p(-alpha_bar) - torch.log(alpha_bar))
        edges = (log_sigma[1:] + log_sigma[:-1]) / 2
        cdf = torch.special.ndtr((edges - mean) / std)
        self._probabilities = torch.diff(cdf, prepend=cdf.new_zeros(1), append=cdf.new_ones(1))

    def probabilities(self) -> torch.Tensor:
        return self._probabilities.clone()

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        timesteps = torch.multinomial(self._probabilities, batch_size, replacement=True, generator=generator)
        return timesteps.to(device), torch.ones(batch_size, device=device)


def create_timestep_sampler(
    name: str,
    num_train_timesteps: int,
    alphas_cumprod: torch.Tensor | None = None,
    log_normal_mean: float = LOG_NORMAL_MEAN,
    log_normal_std: float = LOG_NORMAL_STD,
) -> UniformSampler:
    """The sampler called `name`: "uniform", "importance" (the loss-second-moment sampler) or "log_normal" (which
    needs the schedule's `alphas_cumprod`)."""
    if name == "uniform":
        return UniformSampler(num_train_timesteps)
    if name == "importance":
        return LossSecondMomentSampler(num_train_timesteps)
    if name == "log_normal":
        if alphas_cumprod is None or len(alphas_cumprod) != num_train_timesteps:
            raise ValueError(f"The log-normal timestep sampling needs the {num_train_timesteps} alphas_cumprod.")
        return LogNormalSampler(alphas_cumprod, log_normal_mean, log_normal_std)
    raise ValueError(
        f"Unknown timestep sampling {name!r}; valid values are: {', '.join(map(repr, TIMESTEP_SAMPLINGS))}."
    )
