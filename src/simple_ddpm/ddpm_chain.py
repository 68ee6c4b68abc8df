"""The noise schedule and the reverse chain: every coefficient that sampling and the bound read, built once.

Notation. The paper counts t = 1..T; diffusers' tables and a UNet's timestep input count t = 0..T-1. Index ``t`` of
every table is the paper's step ``t + 1``: ``alphas_cumprod[t]`` is alpha_bar_{t+1}, and the step after index 0 is
the data itself (alpha_bar_0 = 1).

A chain is a decreasing list of timesteps t_1 > ... > t_K, the full T-step process or a respaced one. On it the
process is a DDPM of its own with beta'_i = 1 - alpha_bar_{t_i} / alpha_bar_{t_{i+1}} (Nichol & Dhariwal 2021,
sec. 4; improved-diffusion's respace.py), so one `DDPMChain` serves every chain. Its tables are float64, computed
on the CPU; `DDPMChain.gather` hands them to a device in the dtype of the tensor they combine with.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .analytic_dpm import analytic_variance, clip_analytic_std

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine", "sigmoid")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
FIXED_VARIANCE_TYPES = ("fixed_small", "fixed_large")
LEARNED_VARIANCE_TYPES = ("learned_range", "learned")
VARIANCE_TYPES = FIXED_VARIANCE_TYPES + LEARNED_VARIANCE_TYPES + ("analytic",)
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing", "optimal")


def choose(name: str, value: str, valid: tuple[str, ...]) -> str:
    """`value` if it is one of `valid`, else a one-line ValueError that lists the valid values."""
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; valid values are: {', '.join(map(repr, valid))}.")
    return value


def table_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype in which the float64 tables go to `device`: float64, or float32 where the device has no float64
    (Apple MPS, as diffusers' schedulers special-case it)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def cosine_alphas_cumprod(num_train_timesteps: int, s: float = 0.008) -> np.ndarray:
    """alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2) (Nichol & Dhariwal 2021 eq. 17)."""
    t = np.arange(num_train_timesteps + 1, dtype=np.float64) / num_train_timesteps
    f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return f / f[0]


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """beta_1..beta_T of a named schedule, in float64, computed as diffusers' DDPMScheduler does."""
    if beta_schedule == "linear":  # Ho et al. 2020, sec. 4: 1e-4 .. 0.02 over T = 1000
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    if beta_schedule == "scaled_linear":  # latent diffusion: linear in sqrt(beta)
        return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":  # beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, capped at 0.999
        alpha_bar = cosine_alphas_cumprod(num_train_timesteps)
        return np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
    if beta_schedule == "sigmoid":  # GeoDiff (Xu et al. 2022)
        x = np.linspace(-6, 6, num_train_timesteps, dtype=np.float64)
        return 1 / (1 + np.exp(-x)) * (beta_end - beta_start) + beta_start
    raise AssertionError(beta_schedule)  # validated by the scheduler


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Betas whose alpha_bar_T is 0 (Lin et al. 2023, Algorithm 1), in float64.

    sqrt(alpha_bar_t) is shifted so that its last value is 0 and scaled so that its first value is unchanged:
    sqrt(alpha_bar'_t) = (sqrt(alpha_bar_t) - sqrt(alpha_bar_T)) sqrt(alpha_bar_1) / (sqrt(alpha_bar_1) -
    sqrt(alpha_bar_T)); then beta'_t = 1 - alpha_bar'_t / alpha_bar'_{t-1}, so beta'_1 = beta_1 and beta'_T = 1.
    """
    sqrt_alpha_bar = np.sqrt(np.cumprod(1 - betas))
    first, last = sqrt_alpha_bar[0], sqrt_alpha_bar[-1]
    alpha_bar = ((sqrt_alpha_bar - last) * (first / (first - last))) ** 2
    return 1 - np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])


def schedule_betas(
    num_train_timesteps: int,
    beta_schedule: str,
    beta_start: float,
    beta_end: float,
    trained_betas: np.ndarray | list[float] | None = None,
    rescale_betas_zero_snr: bool = False,
) -> np.ndarray:
    """beta_1..beta_T of a scheduler's configuration (`SimpleDDPMScheduler`'s arguments), validated, float64."""
    if num_train_timesteps < 2:
        raise ValueError(
            f"num_train_timesteps must be at least 2, got {num_train_timesteps}: the decoder's variance at t = 1 "
            "is sigma^2(2), which needs a second step."
        )
    if trained_betas is not None:
        betas = np.asarray(trained_betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) != num_train_timesteps:
            raise ValueError(
                f"trained_betas must be a list of num_train_timesteps={num_train_timesteps} numbers, one beta "
                f"per forward step, got shape {betas.shape}."
            )
    else:
        if beta_schedule != "squaredcos_cap_v2" and not beta_start < beta_end:
            raise ValueError(f"beta_end ({beta_end}) must be greater than beta_start ({beta_start}).")
        betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
    if not np.all((betas > 0) & (betas < 1)):
        bad = betas[~((betas > 0) & (betas < 1))]
        raise ValueError(
            "Every beta must lie in (0, 1): beta_t is the variance added at step t and sqrt(1 - beta_t) the "
            f"scale of x_{{t-1}}; got {bad[:5].tolist()}."
        )
    if rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)  # beta_T = 1: alpha_bar_T = 0
    return betas


def spaced_timesteps(num_train_timesteps: int, num_steps: int, spacing: str, steps_offset: int = 0) -> np.ndarray:
    """`num_steps` decreasing timesteps of [0, T-1] by `spacing`, as diffusers spaces them: "linspace" (Nichol &
    Dhariwal's respacing: rounded evenly spaced points, first and last step included), "leading" (0, T//n, ...,
    + `steps_offset`) or "trailing" (T-1, T-1-T/n, ..., rounded)."""
    T, n = num_train_timesteps, num_steps
    if spacing == "linspace":
        steps = np.round(np.linspace(0, T - 1, n)).astype(np.int64)[::-1]
    elif spacing == "leading":
        steps = (np.arange(n) * (T // n) + steps_offset)[::-1]
    else:
        steps = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
    steps = np.array(steps)  # a copy: ascontiguousarray keeps the negative stride of a 1-element view
    if not (np.all(np.diff(steps) < 0) and 0 <= steps[-1] and steps[0] < T):
        raise ValueError(f"timestep_spacing={spacing!r} with steps_offset gives invalid steps {steps}.")
    return steps


def check_timesteps(timesteps: list[int], num_train_timesteps: int, name: str = "`timesteps`") -> np.ndarray:
    """Explicit timesteps of a chain as an int64 array, validated: non-empty integers, strictly decreasing, in
    [0, T-1]. `name` is the option's name in the error."""
    T = num_train_timesteps
    raw = np.asarray(list(timesteps))
    if raw.ndim != 1 or len(raw) == 0 or raw.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a non-empty list of integers, got {raw.tolist()}.")
    steps = raw.astype(np.int64)
    if np.any(np.diff(steps) >= 0):
        raise ValueError(f"{name} must be strictly decreasing, got {steps.tolist()}.")
    if steps[0] >= T or steps[-1] < 0:
        raise ValueError(f"{name} must lie in [0, {T - 1}], got {steps[0]} .. {steps[-1]}.")
    return steps


def check_scheduler_options(config: dict) -> None:
    """The options of `SimpleDDPMScheduler` that the schedule's own checks (`schedule_betas`) do not cover, each
    with its valid values in the error."""
    choose("beta_schedule", config["beta_schedule"], BETA_SCHEDULES)
    choose("prediction_type", config["prediction_type"], PREDICTION_TYPES)
    choose("variance_type", config["variance_type"], VARIANCE_TYPES)
    choose("timestep_spacing", config["timestep_spacing"], TIMESTEP_SPACINGS)
    if config["thresholding"] and not 0 <= config["dynamic_thresholding_ratio"] <= 1:
        raise ValueError(f"dynamic_thresholding_ratio must lie in [0, 1], got {config['dynamic_thresholding_ratio']}.")
    if config["thresholding"] and not config["sample_max_value"] > 0:
        raise ValueError(f"sample_max_value must be positive, got {config['sample_max_value']}.")
    if config["clip_sample_range"] <= 0:
        raise ValueError(f"clip_sample_range must be positive, got {config['clip_sample_range']}.")
    if config["distilled_timesteps"] is not None:
        check_timesteps(config["distilled_timesteps"], config["num_train_timesteps"], name="distilled_timesteps")
    pixels = config["analytic_clip_pixels"]
    if pixels is not None and not pixels > 0:
        raise ValueError(f"analytic_clip_pixels must be positive (or None: no bound), got {pixels}.")


def prediction_coefficients(prediction_type: str, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_x, c_out) with x0_hat = c_x x_t - c_out output; for Design II x0_hat = (x_t - c_out output) c_x (Ho et
    al. eq. 15, infinite rather than NaN where alpha_bar_t = 0, as in diffusers); v: Salimans & Ho 2022."""
    if prediction_type == "epsilon":
        return 1 / alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return torch.zeros_like(alpha_bar), -torch.ones_like(alpha_bar)


@dataclass(frozen=True)
class DDPMChain:
    """One reverse chain t_1 > ... > t_K: per step its coefficients for `step`, DDIM and the bound.

    Build it with `DDPMChain.build`. Per step t_i -> t_{i+1} (alpha_bar = 1 after the last step):
    - ``step_rows[t]``: (c_x, c_out, coef_x0, coef_xt, std) as Python floats: x0_hat = c_x x_t - c_out output,
      mean = coef_x0 x0_hat + coef_xt x_t (Ho et al. eq. 7 on the chain), std of the noise at eta = 1.
    - ``ddim_rows[t]``: (alpha_bar_{t_i}, alpha_bar_{t_{i+1}}, beta~'_i), what DDIM's step reads (Song et al. 2021).
    - ``log_variance_range[t]``: (min_log, max_log), the ends of "learned_range"'s interpolation.
    - ``tables``: length-T float64 tables over the timestep index, 0 off the chain: ``alpha_bar``,
      ``alpha_bar_prev``, ``beta`` (beta'), ``coef_x0``, ``coef_xt``, ``posterior_variance`` (beta~'),
      ``posterior_log_variance``, ``model_log_variance``, ``min_log``, ``max_log``, ``is_last``, ``on_chain``.
    """

    timesteps: tuple[int, ...]
    step_rows: dict[int, tuple[float, float, float, float, float]]
    ddim_rows: dict[int, tuple[float, float, float]]
    log_variance_range: dict[int, tuple[float, float]]
    second_to_last_step: int | None
    tables: dict[str, torch.Tensor]
    _device_tables: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        timesteps: np.ndarray,
        alphas_cumprod: torch.Tensor,
        *,
        prediction_type: str,
        variance_type: str,
        mean_squared_eps: torch.Tensor | None = None,
        analytic_clip_pixels: float | None = None,
        betas: torch.Tensor | None = None,
    ) -> "DDPMChain":
        """The chain on the decreasing `timesteps` of the process with `alphas_cumprod` (float64, length T).

        beta'_i = 1 - alpha_bar_{t_i} / alpha_bar_{t_{i+1}}, unless `betas` (length T) gives the full chain's own
        beta_t, which are the same numbers up to rounding: the T-step tables of training and the T-step bound are
        the betas themselves, as in improved-diffusion. For `variance_type="analytic"`, `mean_squared_eps` is G_t
        (see `analytic_dpm.analytic_variance`) and `analytic_clip_pixels` bounds the second-to-last step's std.
        """
        steps = np.asarray(timesteps, dtype=np.int64)
        index = torch.from_numpy(steps)
        alpha_bar = alphas_cumprod[index]
        alpha_bar_prev = torch.cat([alpha_bar[1:], torch.ones(1, dtype=torch.float64)])
        beta = 1 - alpha_bar / alpha_bar_prev if betas is None else betas[index]  # beta'_i
        coef_x0 = alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)
        coef_xt = (1 - beta).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
        posterior_variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)  # beta~'_i, 0 at the last step
        analytic = None
        if variance_type == "analytic":
            analytic = analytic_variance(alpha_bar, alpha_bar_prev, posterior_variance, mean_squared_eps[index])
        variance = {"fixed_large": beta, "analytic": analytic}.get(variance_type, posterior_variance)
        std = variance.sqrt()
        std[-1] = 0.0  # no noise at the last step
        if variance_type == "analytic" and len(steps) > 1:
            std[-2] = clip_analytic_std(float(std[-2]), analytic_clip_pixels)
        c_x, c_out = prediction_coefficients(prediction_type, alpha_bar)
        keys = steps.tolist()
        rows = torch.stack([c_x, c_out, coef_x0, coef_xt, std], 1).tolist()
        ddim_rows = torch.stack([alpha_bar, alpha_bar_prev, posterior_variance], 1).tolist()
        # The last step adds no noise; the bound's decoder uses the next-to-last's variance, as sigma^2(1) is
        # replaced by sigma^2(2) in the T-step chain (improved-diffusion's convention).
        clipped_posterior_variance = posterior_variance.clone()
        clipped_posterior_variance[-1] = posterior_variance[-2] if len(steps) > 1 else beta[-1]
        log_variance_range = {}
        if variance_type in LEARNED_VARIANCE_TYPES:
            ranges = torch.stack([clipped_posterior_variance.log(), beta.log()], 1).tolist()
            log_variance_range = dict(zip(keys, map(tuple, ranges), strict=True))
        tiny = torch.finfo(torch.float64).tiny
        bound_variance = {
            "fixed_large": torch.cat([beta[:-1], clipped_posterior_variance[-1:]]),
            "analytic": None if analytic is None else analytic.clamp(min=tiny),  # sigma*^2 without the pixel rule
        }.get(variance_type, clipped_posterior_variance)
        columns = {
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "beta": beta,
            "coef_x0": coef_x0,
            "coef_xt": coef_xt,
            "posterior_variance": posterior_variance,
            "posterior_log_variance": posterior_variance.clamp(min=tiny).log(),
            "model_log_variance": bound_variance.log(),
            "min_log": clipped_posterior_variance.log(),
            "max_log": beta.log(),
            "is_last": (torch.arange(len(steps)) == len(steps) - 1).double(),
            "on_chain": torch.ones(len(steps), dtype=torch.float64),
        }
        T = len(alphas_cumprod)
        tables = {name: torch.zeros(T, dtype=torch.float64).index_copy_(0, index, v) for name, v in columns.items()}
        return cls(
            timesteps=tuple(keys),
            step_rows=dict(zip(keys, map(tuple, rows), strict=True)),
            ddim_rows=dict(zip(keys, map(tuple, ddim_rows), strict=True)),
            log_variance_range=log_variance_range,
            second_to_last_step=keys[-2] if len(keys) > 1 else None,
            tables=tables,
        )

    def gather(self, name: str, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table `name` at `timesteps`, on `like`'s device and dtype, shaped to broadcast against `like`."""
        key = (name, like.device, like.dtype)
        if key not in self._device_tables:
            self._device_tables[key] = self.tables[name].to(device=like.device, dtype=like.dtype)
        values = self._device_tables[key].take(timesteps)
        return values.view(values.shape + (1,) * (like.ndim - 1))

    def ddim_coefficients(
        self,
        timestep: int,
        eta: float,
        variance_type: str = "fixed_small",
        mean_squared_eps: torch.Tensor | None = None,
        analytic_clip_pixels: float | None = None,
    ) -> tuple[float, float, float]:
        """(coef_x0, coef_xt, sigma) of DDIM's step x_{t'} = coef_x0 x0_hat + coef_xt x_t + sigma z, z ~ N(0, I).

        Song et al. 2021, eq. 12: x_{t'} = sqrt(alpha_bar_{t'}) x0_hat + sqrt(1 - alpha_bar_{t'} - sigma^2) eps_hat
        + sigma z, t' the next step of the chain, eps_hat = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t),
        and eq. 16: sigma = eta beta~'^(1/2), eta times the chain's posterior std (eta = 1: DDPM, 0: deterministic
        DDIM). For "analytic" the mean is the same and sigma is sigma*_{t'|t} for lambda = that sigma (Bao et al.
        2022 eq. 9), 0 at the last step.
        """
        alpha_bar, alpha_bar_prev, posterior_variance = self.ddim_rows[timestep]
        sigma = eta * math.sqrt(posterior_variance)
        direction = math.sqrt(max(1 - alpha_bar_prev - sigma**2, 0.0))  # coefficient of eps_hat
        coef_xt = direction / math.sqrt(1 - alpha_bar)
        coef_x0 = math.sqrt(alpha_bar_prev) - coef_xt * math.sqrt(alpha_bar)
        if variance_type == "analytic" and alpha_bar_prev < 1:
            variance = analytic_variance(
                torch.tensor(alpha_bar, dtype=torch.float64),
                torch.tensor(alpha_bar_prev, dtype=torch.float64),
                torch.tensor(sigma**2, dtype=torch.float64),
                mean_squared_eps[timestep],
            )
            sigma = math.sqrt(variance.item())
            if timestep == self.second_to_last_step:
                sigma = clip_analytic_std(sigma, analytic_clip_pixels)
        return coef_x0, coef_xt, sigma

    def check_on_chain(self, timesteps: torch.Tensor) -> None:
        """A one-line ValueError unless every timestep is a step of this chain."""
        on_chain = self.tables["on_chain"].to(timesteps.device, table_dtype(timesteps.device)).take(timesteps)
        if not bool((on_chain == 1).all()):
            raise ValueError(
                f"timesteps {sorted(set(timesteps[on_chain != 1].tolist()))} are not in the current schedule; call "
                "set_timesteps first and pass steps of `scheduler.timesteps`."
            )
