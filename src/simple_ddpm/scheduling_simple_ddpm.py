"""SimpleDDPMScheduler: the DDPM noise schedule, reverse step and variational bound as a diffusers scheduler.

Two designs of the network (Luo 2022, sec. 2.1): ``prediction_type="sample"`` predicts x_0 (Design I),
``"epsilon"`` the noise (Design II, Ho et al. 2020 eq. 11), ``"v_prediction"`` v = sqrt(alpha_bar_t) eps -
sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022). Learned variance (Nichol & Dhariwal 2021, sec. 3.1):
``variance_type="learned_range"`` or ``"learned"``, 2C output channels. Analytic variance (Bao et al. 2022):
``variance_type="analytic"`` and ``timestep_spacing="optimal"`` (`analytic_dpm`).

The scheduler holds the float64 tables of the T-step process (diffusers' and improved-diffusion's names) and two
`DDPMChain`s: ``full_chain``, the T-step process from its betas (training and the T-step bound), and ``chain``, the
chain `step` samples (every step until `set_timesteps`, as in diffusers). The math lives beside it: `ddpm_chain`
(schedule and chain), `variational_bound`, `analytic_dpm`, `training_losses` (weights and targets).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .analytic_dpm import (
    analytic_variance,  # noqa: F401  (re-exported from its former home, as the names below)
    check_mean_squared_eps,
    optimal_timestep_path,
    step_costs,
)
from .ddpm_chain import (  # noqa: F401
    BETA_SCHEDULES,
    FIXED_VARIANCE_TYPES,
    LEARNED_VARIANCE_TYPES,
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    VARIANCE_TYPES,
    DDPMChain,
    check_scheduler_options,
    check_timesteps,
    choose,
    make_betas,
    schedule_betas,
    spaced_timesteps,
)
from .guidance import classifier_free_guidance  # noqa: F401
from .model_output import check_output_channels, dynamic_threshold, learned_log_variance
from .training_losses import (
    LOSS_WEIGHTINGS,  # noqa: F401
    loss_weights,
    signal_to_noise_ratio,
    training_target,
)
from .variational_bound import discretized_gaussian_log_likelihood, normal_kl, p_mean_variance, q_posterior_mean  # noqa: F401
from .variational_bound import prior_bpd as prior_term_bpd
from .variational_bound import vb_terms_bpd as chain_terms_bpd

# DDPMScheduler's private helpers, which are not part of its API, and what serves their purpose here.
DIFFUSERS_PRIVATE_HELPERS = {
    "_get_variance": "`p_mean_variance` (the model's log-variance) or the `posterior_variance` table",
    "_threshold_sample": "`dynamic_threshold`",
}


@dataclass
class SimpleDDPMSchedulerOutput(BaseOutput):
    """Output of `SimpleDDPMScheduler.step`.

    Args:
        prev_sample (`torch.Tensor`): x_{t-1}, a draw from p(x_{t-1} | x_t); the next model input.
        pred_original_sample (`torch.Tensor`): x0_hat, the model's estimate of x_0 (after clipping).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class SimpleDDPMScheduler(SchedulerMixin, ConfigMixin):
    """DDPM (Ho et al. 2020) with exact respacing, both designs of the network, training-loss weights and the ELBO.

    The configuration uses diffusers' key names, so ``SimpleDDPMScheduler.from_config(DDPMScheduler().config)``
    and ``DDPMScheduler.from_config(SimpleDDPMScheduler().config)`` both work.

    Args:
        num_train_timesteps (`int`, defaults to 1000): T, the number of forward steps.
        beta_start (`float`, defaults to 1e-4): beta_1 of the "linear", "scaled_linear" and "sigmoid" schedules.
        beta_end (`float`, defaults to 0.02): beta_T of those schedules.
        beta_schedule (`str`, defaults to "linear"): one of "linear", "scaled_linear", "squaredcos_cap_v2"
            (Nichol & Dhariwal's cosine schedule, also accepted as "cosine"), "sigmoid".
        trained_betas (`list[float]`, *optional*): explicit betas; overrides `beta_schedule`.
        variance_type (`str`, defaults to "fixed_small"): variance of p(x_{t-1} | x_t): "fixed_small" is the
            posterior variance sigma^2(t) = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t, "fixed_large" is beta_t;
            "learned_range" and "learned" read it from the last C of the network's 2C output channels (Nichol &
            Dhariwal 2021; see the module docstring). diffusers' DDPMScheduler samples "learned_range" as we do;
            its "learned" reads v as the variance itself, ours (and improved-diffusion's) as its log.
        clip_sample (`bool`, defaults to True): clip x0_hat to [-clip_sample_range, clip_sample_range].
        prediction_type (`str`, defaults to "epsilon"): "epsilon" (Design II), "sample" (Design I), "v_prediction".
        clip_sample_range (`float`, defaults to 1.0): the clipping bound.
        timestep_spacing (`str`, defaults to "linspace"): how `set_timesteps(n)` picks n of the T steps:
            "linspace" rounds n evenly spaced points of [0, T-1] (Nichol & Dhariwal's respacing; always includes
            the first and last step), "leading" takes 0, T//n, 2T//n, ... (+ steps_offset), "trailing" takes
            T-1, T-1-T/n, ... (rounded), "optimal" the n steps of least bound (`optimal_timesteps`; needs
            `analytic_mean_squared_eps`). At n = T all are every step.
        steps_offset (`int`, defaults to 0): offset added to "leading" timesteps, as in diffusers.
        thresholding (`bool`, defaults to False): dynamic thresholding of x0_hat instead of clipping (Saharia et
            al. 2022): per image, s = the `dynamic_thresholding_ratio` quantile of |x0_hat|, kept in
            [1, `sample_max_value`] (torch.clamp's order: s = `sample_max_value` when that is below 1), and
            x0_hat <- clip(x0_hat, -s, s) / s. Applied in `step` and in the bound (`p_mean_variance`).
        dynamic_thresholding_ratio (`float`, defaults to 0.995): the quantile, in [0, 1].
        sample_max_value (`float`, defaults to 1.0): the largest s, positive.
        rescale_betas_zero_snr (`bool`, defaults to False): rescale the betas to zero terminal SNR (Lin et al.
            2023, Algorithm 1): alpha_bar_T = 0, so x_T is pure noise. The bound is then undefined for
            `prediction_type="epsilon"` (x0_hat divides by sqrt(alpha_bar_T) = 0); use "v_prediction" as Lin et al.
        analytic_mean_squared_eps (`list[float]`, *optional*): G_t = E_q ||eps_theta(x_t, t)||^2 / d for t = 1..T,
            the trained model's mean squared predicted noise over data and noise (Bao et al. 2022), or its
            estimate 1 - E||eps - eps_theta||^2 / d (which may be negative); T numbers in float64, saved in
            scheduler_config.json. Needed by `variance_type="analytic"` and by
            `timestep_spacing="optimal"`; estimated by `SimpleDDPMPipeline.estimate_analytic_variance`.
        analytic_clip_pixels (`float`, *optional*, defaults to 2.0): y of Bao et al. App. F.2: when sampling with
            `variance_type="analytic"`, the std of the second-to-last step is at most y (2/255) sqrt(pi/2), so its
            noise moves a pixel by at most y bins on average. None: no such bound. The bound never uses it.
        distilled_timesteps (`list[int]`, *optional*): set on a student of progressive distillation (Salimans & Ho
            2022; training/distill.py): the decreasing timesteps, in [0, T-1], it was trained to sample in one
            deterministic DDIM step each. `SimpleDDPMPipeline` then samples them by default, at eta = 0
            (`simple_ddpm.distillation.distilled_sampling`).

    `variance_type="analytic"` is the KL-optimal variance sigma*^2 of every step of the chain being sampled (any
    `eta`), from `analytic_mean_squared_eps` (see `analytic_variance`); the last step outputs its mean.

    Example:

    ```py
    import torch
    from simple_ddpm import SimpleDDPMScheduler

    scheduler = SimpleDDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    scheduler.set_timesteps(50)  # the respaced 50-step chain
    sample = torch.randn(1, 3, 32, 32)  # x_T
    generator = torch.Generator().manual_seed(0)
    for t in scheduler.timesteps:
        predicted_noise = torch.zeros_like(sample)  # your network's output at (sample, t)
        sample = scheduler.step(predicted_noise, t, sample, generator=generator).prev_sample
    ```
    """

    _compatibles = ["DDPMScheduler"] + [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        rescale_betas_zero_snr: bool = False,
        analytic_mean_squared_eps: list[float] | None = None,
        analytic_clip_pixels: float | None = 2.0,
        distilled_timesteps: list[int] | None = None,
    ):
        check_scheduler_options(dict(self.config) | {"beta_schedule": beta_schedule})
        if beta_schedule == "cosine":  # store diffusers' name so DDPMScheduler can read our config
            beta_schedule = "squaredcos_cap_v2"
            self.register_to_config(beta_schedule=beta_schedule)

        betas = schedule_betas(
            num_train_timesteps, beta_schedule, beta_start, beta_end, trained_betas, rescale_betas_zero_snr
        )
        mean_squared_eps = check_mean_squared_eps(analytic_mean_squared_eps, num_train_timesteps, variance_type)

        # Float64 tables over t = 1..T (index t-1). Names as in diffusers and improved-diffusion.
        self.betas = torch.from_numpy(betas)  # beta_t
        self.alphas = 1.0 - self.betas  # alpha_t = 1 - beta_t
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)  # alpha_bar_t = prod_{s<=t} alpha_s
        # G_t = E ||eps_theta(x_t, t)||^2 / d (Bao et al. 2022), or None
        self.analytic_mean_squared_eps = None if mean_squared_eps is None else torch.from_numpy(mean_squared_eps)
        every_step = np.arange(num_train_timesteps - 1, -1, -1)
        self.full_chain = self._chain(every_step, betas=self.betas)
        tables = self.full_chain.tables
        self.alphas_cumprod_prev = tables["alpha_bar_prev"]  # alpha_bar_{t-1}, 1 at t = 1
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, sigma^2(t))  (Ho et al. eq. 6-7)
        self.posterior_variance = tables["posterior_variance"]
        self.posterior_mean_coef1 = tables["coef_x0"]
        self.posterior_mean_coef2 = tables["coef_xt"]
        # sigma^2(1) = 0: its log is replaced by log sigma^2(2), as improved-diffusion does.
        self.posterior_log_variance_clipped = tables["min_log"]
        # log-variance of p(x_{t-1} | x_t); at t = 1 both fixed types use sigma^2(2) (improved-diffusion's
        # convention), the analytic one its own sigma*^2 of the step to the data (lambda^2 = 0 there); for the
        # learned types, the variance that the training-loss weights assume (see `loss_weights`).
        self.model_log_variance = tables["model_log_variance"]
        self.log_betas = tables["max_log"]  # the upper end of "learned_range"'s interpolation

        self.init_noise_sigma = 1.0
        self._device_tables: dict[tuple, dict[str, torch.Tensor]] = {}
        # Until `set_timesteps` is called, `step` walks the full chain T-1, ..., 0, as DDPMScheduler does.
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)
        self.chain = self._chain(every_step)

    def _chain(self, steps: np.ndarray, betas: torch.Tensor | None = None) -> DDPMChain:
        """The `DDPMChain` on `steps` under this configuration."""
        return DDPMChain.build(
            steps,
            self.alphas_cumprod,
            prediction_type=self.config.prediction_type,
            variance_type=self.config.variance_type,
            mean_squared_eps=self.analytic_mean_squared_eps,
            analytic_clip_pixels=self.config.analytic_clip_pixels,
            betas=betas,
        )

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def __getattr__(self, name: str):
        if name in DIFFUSERS_PRIVATE_HELPERS:
            raise AttributeError(
                f"SimpleDDPMScheduler has no {name}, a private helper of diffusers' DDPMScheduler outside its API; "
                f"use {DIFFUSERS_PRIVATE_HELPERS[name]}."
            )
        return super().__getattr__(name)

    # ----------------------------------------------------------------------------------------------------------
    # The network's output: the prediction, and with a learned variance the variance's value v.

    @property
    def learns_variance(self) -> bool:
        """Whether the network outputs the reverse variance (2C channels) rather than C channels."""
        return self.config.variance_type in LEARNED_VARIANCE_TYPES

    def check_output_channels(self, output_channels: int, sample_channels: int) -> None:
        """Raise a one-line ValueError unless a network with `output_channels` fits C = `sample_channels` images:
        2C channels for a learned variance, C for a fixed one (`model_output.check_output_channels`)."""
        check_output_channels(self.config.variance_type, output_channels, sample_channels)

    def split_model_output(
        self, model_output: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prediction (first C channels) and, with a learned variance, v (last C channels; else None)."""
        if model_output.ndim < 2 or model_output.shape[2:] != sample.shape[2:] or len(model_output) != len(sample):
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but sample has shape {tuple(sample.shape)}; "
                "they must agree in all but the channel dimension."
            )
        self.check_output_channels(model_output.shape[1], sample.shape[1])
        if not self.learns_variance:
            return model_output, None
        prediction, variance_values = model_output.chunk(2, dim=1)
        return prediction, variance_values

    def learned_log_variance(
        self,
        variance_values: torch.Tensor,
        min_log: torch.Tensor | float,
        max_log: torch.Tensor | float,
    ) -> torch.Tensor:
        """log Sigma_t from the network's v (Nichol & Dhariwal 2021 eq. 15; `model_output.learned_log_variance`)
        between min_log = log sigma~^2_t (clipped) and max_log = log beta_t of the chain being sampled or bounded."""
        return learned_log_variance(self.config.variance_type, variance_values, min_log, max_log)

    # ----------------------------------------------------------------------------------------------------------
    # Forward process and posterior, batched over timesteps (training tables, every t).

    def _table(self, name: str, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Gather table `name` at `timesteps`, on `like`'s device and dtype, shaped to broadcast against it."""
        key = (like.device, like.dtype)
        tables = self._device_tables.setdefault(key, {})
        if name not in tables:
            tables[name] = getattr(self, name).to(device=like.device, dtype=like.dtype)
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor(timesteps)
        values = tables[name].take(timesteps.to(like.device).long())
        return values.view(values.shape + (1,) * (like.ndim - values.ndim))

    @property
    def sqrt_alphas_cumprod(self) -> torch.Tensor:
        return self.alphas_cumprod.sqrt()

    @property
    def sqrt_one_minus_alphas_cumprod(self) -> torch.Tensor:
        return (1 - self.alphas_cumprod).sqrt()

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, a draw from q(x_t | x_0) (Ho et al. eq. 4)."""
        a = self._table("sqrt_alphas_cumprod", timesteps, original_samples)
        b = self._table("sqrt_one_minus_alphas_cumprod", timesteps, original_samples)
        return torch.mul(original_samples, a).addcmul_(b, noise)

    def alpha_bar(self, timestep: int) -> float:
        """alpha_bar of table index `timestep`, a Python float; 1 at -1, the data (alpha_bar_0 = 1)."""
        return 1.0 if timestep == -1 else self.alphas_cumprod[timestep].item()

    def add_noise_between(
        self, sample: torch.Tensor, noise: torch.Tensor, timestep: int, to_timestep: int
    ) -> torch.Tensor:
        """x_{t'} = sqrt(alpha_bar_{t'} / alpha_bar_t) x_t + sqrt(1 - alpha_bar_{t'} / alpha_bar_t) eps, a draw from
        q(x_{t'} | x_t) for t' > t: the forward steps t+1..t' (Ho et al. eq. 2) composed into one. `timestep` -1 is
        the data, where this is `add_noise`. RePaint's jump back (Lugmayr et al. 2022, Algorithm 1 line 9)."""
        if not -1 <= timestep < to_timestep < len(self):
            raise ValueError(
                f"add_noise_between needs -1 <= timestep < to_timestep < {len(self)}, got {timestep}, {to_timestep}."
            )
        ratio = self.alpha_bar(to_timestep) / self.alpha_bar(timestep)
        return torch.mul(sample, math.sqrt(ratio)).add_(noise, alpha=math.sqrt(1 - ratio))

    def ddim_inverse_step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor) -> torch.Tensor:
        """x_t from x_{t'}: deterministic DDIM (Song et al. 2021 eq. 12, eta = 0) run forwards, from t' (the step
        after `timestep` in the current schedule; the data after the last) up to t = `timestep`.

        `model_output` is the network's output at (x_{t'}, t), read as if x_{t'} were at t: eps_hat = (x_{t'} -
        sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t) with x0_hat from `predict_original_sample` (unclipped).
        Then x_t = sqrt(alpha_bar_t / alpha_bar_{t'}) (x_{t'} - sqrt(1 - alpha_bar_{t'}) eps_hat)
        + sqrt(1 - alpha_bar_t) eps_hat, which `step(eta=0)` from t maps back to x_{t'} exactly when the network's
        eps_hat at (x_t, t) is the same (for Design II: the same output). The difference, the probability-flow
        ODE's discretisation error, falls as the steps get smaller. Reading eps_hat, not x0_hat, keeps the step
        invertible at the last one, where x_0 = x0_hat would forget x_t. Decode with `clip_sample=False` (clipping
        has no inverse). As diffusers' DDIMInverseScheduler for epsilon prediction.
        """
        prediction, _ = self.split_model_output(model_output, sample)
        alpha_bar, alpha_bar_next, _ = self.chain.ddim_rows[int(timestep)]  # alpha_bar_t, alpha_bar_{t'}
        t = torch.tensor([int(timestep)], device=sample.device)
        x0_hat = self.predict_original_sample(prediction, sample, t)
        eps_hat = (sample - math.sqrt(alpha_bar) * x0_hat) / math.sqrt(1 - alpha_bar)
        x0_at_next = (sample - math.sqrt(1 - alpha_bar_next) * eps_hat) / math.sqrt(alpha_bar_next)
        return math.sqrt(alpha_bar) * x0_at_next + math.sqrt(1 - alpha_bar) * eps_hat

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022); `sample` is x_0."""
        a = self._table("sqrt_alphas_cumprod", timesteps, sample)
        b = self._table("sqrt_one_minus_alphas_cumprod", timesteps, sample)
        return a * noise - b * sample

    def get_target(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the network should output for x_t = add_noise(x_0, eps, t) under `prediction_type`
        (`training_losses.training_target`)."""
        return training_target(self, original_samples, noise, timesteps)

    def predict_original_sample(
        self, model_output: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """x0_hat from the network's output at x_t (before clipping); Ho et al. eq. 15 for Design II."""
        if self.config.prediction_type == "sample":
            return model_output
        a = self._table("sqrt_alphas_cumprod", timesteps, sample)
        b = self._table("sqrt_one_minus_alphas_cumprod", timesteps, sample)
        if self.config.prediction_type == "epsilon":
            return (sample - b * model_output) / a
        return a * sample - b * model_output

    def q_posterior(
        self, original_samples: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 6-7), broadcast to the sample's shape.

        mu_q = (sqrt(alpha_t)(1 - alpha_bar_{t-1}) x_t + sqrt(alpha_bar_{t-1}) beta_t x_0) / (1 - alpha_bar_t),
        sigma^2(t) = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
        """
        t = torch.as_tensor(timesteps, device=sample.device).long()
        mean = q_posterior_mean(self.full_chain, original_samples, sample, t)
        variance = self.full_chain.gather("posterior_variance", t, sample).expand_as(sample)
        return mean, variance

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        clip_sample: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the model's p(x_{t-1} | x_t), and x0_hat (clipped when `clip_sample`).

        Both designs go through x0_hat: mu = mu_q(x_t, x0_hat), which equals Ho et al.'s eq. 11 for Design II.
        x0_hat is thresholded or clipped exactly as in `step`, so the bound is that of the sampler.
        With a learned variance, `model_output` has 2C channels and the log-variance is `learned_log_variance` of
        its last C, between the T-step chain's log sigma~^2_t (clipped) and log beta_t. `clip_sample` overrides
        the config's; False leaves x0_hat neither clipped nor thresholded (training, as improved-diffusion's
        `training_losses`: clipping would cut the gradient).
        """
        return p_mean_variance(self, self.full_chain, model_output, sample, timesteps, clip_sample)

    def clip_predicted_x0(self, pred_original_sample: torch.Tensor, clip_sample: bool | None = None) -> torch.Tensor:
        """x0_hat thresholded or clipped as `step` does; `clip_sample` overrides the config's (False: neither)."""
        clip = self.config.clip_sample if clip_sample is None else clip_sample
        if self.config.thresholding and clip_sample is not False:
            return self.dynamic_threshold(pred_original_sample)
        if clip:
            r = self.config.clip_sample_range
            return pred_original_sample.clamp(-r, r)
        return pred_original_sample

    def predicted_noise(
        self, model_output: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """eps_hat, the noise implied by the prediction (first C channels of `model_output`) at x_t, unclipped:
        eps_hat = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t), v: sqrt(alpha_bar_t) v + sqrt(1 -
        alpha_bar_t) x_t. What G_t of `analytic_variance` averages the square of."""
        prediction, _ = self.split_model_output(model_output, sample)
        if self.config.prediction_type == "epsilon":
            return prediction
        a = self._table("sqrt_alphas_cumprod", timesteps, sample)
        b = self._table("sqrt_one_minus_alphas_cumprod", timesteps, sample)
        if self.config.prediction_type == "v_prediction":
            return a * prediction + b * sample
        return (sample - a * prediction) / b

    def dynamic_threshold(self, pred_original_sample: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding of x0_hat per image (Saharia et al. 2022, sec. 2.3; `model_output.dynamic_threshold`)
        with p = `dynamic_thresholding_ratio` and the largest s = `sample_max_value`."""
        config = self.config
        return dynamic_threshold(pred_original_sample, config.dynamic_thresholding_ratio, config.sample_max_value)

    def check_bound_is_defined(self) -> None:
        if self.config.prediction_type == "epsilon" and self.alphas_cumprod[-1].item() == 0:
            raise ValueError(
                "The bound is undefined for prediction_type='epsilon' with rescale_betas_zero_snr=True: at t = T, "
                "x0_hat = (x_T - eps_hat) / sqrt(alpha_bar_T) divides by 0; use 'v_prediction' (Lin et al. 2023)."
            )

    # ----------------------------------------------------------------------------------------------------------
    # Training-loss weights.

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        """SNR(t) = alpha_bar_t / (1 - alpha_bar_t) on the timesteps' device (`training_losses`)."""
        return signal_to_noise_ratio(self, timesteps)

    def loss_weights(
        self,
        timesteps: torch.Tensor,
        weighting: str = "simple",
        snr_gamma: float = 5.0,
        p2_gamma: float = 1.0,
        p2_k: float = 1.0,
    ) -> torch.Tensor:
        """Per-sample weights w(t) for the loss w(t) * mean((model_output - get_target(...))^2): "simple", "elbo"
        (the bound's KL term, Ho et al. eq. 5, 8-12), "min_snr" (Hang et al. 2023) or "p2" (Choi et al. 2022);
        the formulas: `training_losses.loss_weights`. Float32 on the timesteps' device."""
        return loss_weights(self, timesteps, weighting, snr_gamma, p2_gamma, p2_k)

    # ----------------------------------------------------------------------------------------------------------
    # The variational bound, term by term, in bits per dimension (Ho et al. eq. 5).

    def prior_bpd(self, original_samples: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per image, in bits/dim; 0 under zero terminal SNR, where q(x_T | x_0)
        is N(0, I). `timestep`: the chain's first step instead of T (default T)."""
        timestep = len(self) - 1 if timestep is None else timestep
        t = torch.full(original_samples.shape[:1], timestep, device=original_samples.device)
        sqrt_alpha_bar = self._table("sqrt_alphas_cumprod", t, original_samples)
        alpha_bar = self._table("alphas_cumprod", t, original_samples)
        return prior_term_bpd(original_samples, sqrt_alpha_bar, alpha_bar)

    def vb_terms_bpd(
        self,
        model_output: torch.Tensor,
        original_samples: torch.Tensor,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        clip_sample: bool | None = None,
    ) -> torch.Tensor:
        """The T-step bound's term at each (x_0, x_t, t) per image, in bits/dim (Ho et al. eq. 5; improved-diffusion's
        `_vb_terms_bpd`): L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t >= 2 (index >= 1), the
        discretized decoder's L_0 = -log p(x_0 | x_1) at t = 1, with the model's log-variance at t = 1 (sigma^2(2)
        for a fixed variance). `model_output` has 2C channels with a learned variance. Exact in float64 (float32 on
        a device without it). `clip_sample` overrides the config's, as in `p_mean_variance`. See
        `variational_bound.vb_terms_bpd`.
        """
        return chain_terms_bpd(self, self.full_chain, model_output, original_samples, sample, timesteps, clip_sample)

    def chain_vb_terms_bpd(
        self,
        model_output: torch.Tensor,
        original_samples: torch.Tensor,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        clip_sample: bool | None = None,
    ) -> torch.Tensor:
        """`vb_terms_bpd` of the current chain (the one `step` samples at eta = 1, after `set_timesteps(K)`; Nichol &
        Dhariwal sec. 4): the variance as `step` draws it (fixed, learned, or sigma*^2 without the sampling rule of
        `analytic_clip_pixels`); the last step is the decoder, with the next-to-last step's beta~ for the fixed
        variances and its own sigma*^2 for the analytic one."""
        return chain_terms_bpd(self, self.chain, model_output, original_samples, sample, timesteps, clip_sample)

    # ----------------------------------------------------------------------------------------------------------
    # Sampling.

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the reverse-process steps: `num_inference_steps` of them by `timestep_spacing`, or `timesteps`.

        Respacing (Nichol & Dhariwal 2021, sec. 4): on the chosen steps t_1 > t_2 > ... > t_n the process is
        a DDPM of its own with beta'_i = 1 - alpha_bar_{t_i} / alpha_bar_{t_{i+1}} (alpha_bar after the last
        step is 1), so every `step` samples the exact posterior of that shorter process. A learned variance
        interpolates between that chain's own log sigma~'^2_i (clipped at the last step as at t = 1) and
        log beta'_i, as improved-diffusion's respaced diffusion does.
        """
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("Pass exactly one of `num_inference_steps` or `timesteps`.")
        if timesteps is not None:
            steps = check_timesteps(timesteps, T)
        else:
            n = num_inference_steps
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= T:
                raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {n!r}.")
            if self.config.timestep_spacing == "optimal":
                steps = np.asarray(self.optimal_timesteps(n), dtype=np.int64)
            else:
                steps = spaced_timesteps(T, n, self.config.timestep_spacing, self.config.steps_offset)
        self.num_inference_steps = len(steps)
        self.timesteps = torch.from_numpy(steps).to(device)
        self.chain = self._chain(steps)

    def ddim_coefficients(self, timestep: int, eta: float) -> tuple[float, float, float]:
        """(coef_x0, coef_xt, sigma) of DDIM's step x_{t'} = coef_x0 x0_hat + coef_xt x_t + sigma z on the current
        chain (Song et al. 2021 eq. 12, 16; with "analytic", sigma*; see `DDPMChain.ddim_coefficients`)."""
        return self.chain.ddim_coefficients(
            timestep, eta, self.config.variance_type, self.analytic_mean_squared_eps, self.config.analytic_clip_pixels
        )

    def optimal_timesteps(self, num_inference_steps: int) -> list[int]:
        """The K = `num_inference_steps` timesteps T-1 = tau_K > ... > tau_1 = 0 whose chain has the least expected
        bound (Bao et al. 2022, eq. 14: `analytic_dpm.optimal_timestep_path` on `step_costs`); decreasing, as
        `set_timesteps` takes them. Needs a fixed or analytic variance; cached per K. The derivation of the costs
        is in docs/mathematics.md ("Analytic-DPM")."""
        T = len(self)
        if self.analytic_mean_squared_eps is None:
            raise ValueError(
                "optimal timesteps need analytic_mean_squared_eps (the model's mean squared predicted noise per "
                "timestep): estimate it with pipe.estimate_analytic_variance(images) or `simple-ddpm analytic`."
            )
        if self.learns_variance:
            raise ValueError(
                f"optimal timesteps need a fixed or analytic variance; variance_type={self.config.variance_type!r} "
                "depends on x_t. Use timestep_spacing 'linspace'."
            )
        if isinstance(num_inference_steps, bool) or not 1 <= num_inference_steps <= T:
            raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {num_inference_steps!r}.")
        cache = self.__dict__.setdefault("_optimal_timesteps", {})
        if num_inference_steps not in cache:
            cache[num_inference_steps] = optimal_timestep_path(self.step_costs(), num_inference_steps)
        return list(cache[num_inference_steps])

    def step_costs(self) -> np.ndarray:
        """J[s, t] for every pair of timestep indices s < t: 2 / d times the expected KL term of a DDPM step t -> s
        under this scheduler's variance (`analytic_dpm.step_costs`), +inf where s >= t. T x T, float64."""
        return step_costs(self.alphas_cumprod, self.analytic_mean_squared_eps, self.config.variance_type)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The step after `timestep` in the current schedule, as DDPMScheduler returns it: a 0-d tensor (-1 after
        the last) once `set_timesteps` was called, else `timestep - 1`."""
        if self.num_inference_steps is None:
            return timestep - 1
        index = (self.timesteps == timestep).nonzero(as_tuple=True)[0][0]
        return self.timesteps[index + 1] if index + 1 < len(self.timesteps) else torch.tensor(-1)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """DDPM feeds x_t to the network unscaled (diffusers interface)."""
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        eta: float = 1.0,
    ) -> SimpleDDPMSchedulerOutput | tuple:
        """Draw x_{t-1} ~ p(x_{t-1} | x_t) = N(mu_q(x_t, x0_hat), s^2) (Ho et al. Algorithm 2, one iteration).

        With `eta` != 1, DDIM's step instead (Song et al. 2021 eq. 12 and 16, see `ddim_coefficients`).

        Args:
            model_output (`torch.Tensor`): the network's output at (x_t, t), shaped like `sample`; with a learned
                variance, 2C channels (the prediction, then v, see `learned_log_variance`).
            timestep (`int`): t, one of `self.timesteps` (before `set_timesteps`, of the full chain T-1, ..., 0).
            sample (`torch.Tensor`): x_t.
            generator (`torch.Generator` or list of them, *optional*): for the added noise; a list gives one
                generator per image.
            return_dict (`bool`, defaults to True): return a `SimpleDDPMSchedulerOutput` rather than a tuple.
            eta (`float`, defaults to 1.0): in [0, 1], the weight of the noise: 1 is DDPM (exactly the step without
                `eta`), 0 is deterministic DDIM. Values other than 1 need `variance_type` "fixed_small" or
                "analytic".
        """
        if eta != 1:
            if not 0 <= eta <= 1:
                raise ValueError(f"eta must lie in [0, 1] (0: DDIM, 1: DDPM), got {eta}.")
            if self.config.variance_type not in ("fixed_small", "analytic"):
                raise ValueError(
                    f"eta={eta} scales the posterior standard deviation (DDIM eq. 16), which needs "
                    f"variance_type='fixed_small' or 'analytic'; this scheduler has {self.config.variance_type!r}. "
                    "Use eta=1."
                )
        # 1. The step's coefficients on the current chain (DDIM's when eta != 1).
        model_output, variance_values = self.split_model_output(model_output, sample)
        t = int(timestep)
        try:
            c_x, c_out, coef_x0, coef_xt, std = self.chain.step_rows[t]
        except KeyError:
            raise ValueError(
                f"timestep {t} is not in the current schedule of {len(self.timesteps)} steps "
                f"({self.timesteps[0].item()} .. {self.timesteps[-1].item()}); pass one of `scheduler.timesteps`."
            ) from None
        if eta != 1:
            coef_x0, coef_xt, std = self.ddim_coefficients(t, eta)

        # 2. x0_hat from the network's output (Ho et al. eq. 15 for Design II). One pass over the batch per line,
        # in place on the tensors made here; in-place ops keep their left operand's dtype, so x_t is first cast to
        # the dtype that torch.add would promote mixed inputs to.
        x_t = sample.to(torch.promote_types(sample.dtype, model_output.dtype))
        if self.config.prediction_type == "sample":
            pred_original_sample = model_output
        elif self.config.prediction_type == "epsilon":
            pred_original_sample = torch.sub(x_t, model_output, alpha=c_out).mul_(c_x)
        else:
            pred_original_sample = torch.mul(x_t, c_x).sub_(model_output, alpha=c_out)

        # 3. Threshold or clip x0_hat.
        r = self.config.clip_sample_range
        if self.config.thresholding:  # instead of clipping, as in diffusers
            pred_original_sample = self.dynamic_threshold(pred_original_sample)
        elif self.config.clip_sample and pred_original_sample is model_output:
            pred_original_sample = model_output.clamp(-r, r)
        elif self.config.clip_sample:
            pred_original_sample.clamp_(-r, r)

        # 4. The mean of p(x_{t-1} | x_t) = mu_q(x_t, x0_hat) (Ho et al. eq. 7).
        prev_sample = torch.mul(x_t, coef_xt).add_(pred_original_sample, alpha=coef_x0)

        # 5. Add noise: the chain's std, or the network's learned variance.
        if std > 0:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            if variance_values is None:
                prev_sample.add_(noise, alpha=std)
            else:
                min_log, max_log = self.chain.log_variance_range[t]
                log_variance = self.learned_log_variance(variance_values.to(prev_sample.dtype), min_log, max_log)
                prev_sample.addcmul_(noise, torch.exp(0.5 * log_variance))

        if not return_dict:
            return prev_sample, pred_original_sample
        return SimpleDDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
