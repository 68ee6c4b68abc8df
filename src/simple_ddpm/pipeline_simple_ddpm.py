"""DDPM sampling, unconditional or class-conditional with classifier-free guidance, and the exact variational bound,
as a diffusers pipeline."""

import importlib
import inspect
import logging as logging_std
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, ModelMixin, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

# For remote code from a local folder, diffusers copies only this file's own relative imports, not theirs: so the
# modules the scheduler imports are imported here too (the `noqa: F401` lines; see hub.py).
from .analytic_dpm import analytic_variance  # noqa: F401
from .ddpm_chain import table_dtype
from .distillation import distilled_sampling
from .elbo import ELBOOutput, geometric_strata, negative_elbo  # noqa: F401  (ELBOOutput, geometric_strata: public here)
from .float32_attention import use_float32_attention
from .guidance import classifier_free_guidance
from .hardware import measured_precision, measurement_key, native_bf16, unet_seconds
from .model_output import learned_log_variance  # noqa: F401
from .scheduling_simple_ddpm import SimpleDDPMScheduler
from .timestep_samplers import UniformSampler  # noqa: F401
from .training_losses import training_losses  # noqa: F401
from .variational_bound import term_bits  # noqa: F401

logger = logging.get_logger(__name__)


class _AnalyticKeysFilter(logging_std.Filter):
    """Drop diffusers' warning that DDPMScheduler ignores the analytic keys of a saved SimpleDDPMScheduler config.

    A pipeline folder names DDPMScheduler (see `simple_ddpm.hub`), which diffusers builds first and which keeps the
    keys it does not know for `SimpleDDPMScheduler.from_config`; the warning would print the whole table at every
    load. Any other unexpected key is still reported."""

    def filter(self, record: logging_std.LogRecord) -> bool:
        message = record.getMessage()
        if "were passed to DDPMScheduler" not in message:
            return True
        keys = re.findall(r"'(\w+)': ", message.split(" were passed")[0])
        return not (keys and all(key.startswith("analytic_") or key == "distilled_timesteps" for key in keys))


logging.get_logger("diffusers.configuration_utils").addFilter(_AnalyticKeysFilter())

OUTPUT_TYPES = ("pil", "np", "pt")
SAMPLING_PRECISIONS = ("auto", "no", "bf16")
ANALYTIC_ESTIMATORS = ("prediction_error", "mean_squared_eps")

ClassLabels = int | str | list[int | str] | torch.Tensor


def _hub_module() -> ModuleType | None:
    """`simple_ddpm.hub`, imported on first use; None in the copy of this file that a Hub repo carries for
    diffusers-only users. Not `from .hub import ...`: diffusers ships a pipeline file's relative imports with it,
    and the Hub code needs neither hub.py nor model_card.py."""
    try:
        return importlib.import_module("simple_ddpm.hub")
    except ModuleNotFoundError as error:
        if error.name not in ("simple_ddpm", "simple_ddpm.hub"):
            raise
        return None


def _sample_shape(unet: torch.nn.Module, batch_size: int) -> tuple[int, ...]:
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return (batch_size, unet.config.in_channels, height, width)


class SimpleDDPMPipeline(DiffusionPipeline):
    """Image generation with DDPM (Ho et al. 2020, Algorithm 2) and the model's likelihood bound; unconditional, or
    class-conditional with classifier-free guidance (Ho & Salimans 2022).

    Args:
        unet (`UNet2DModel`): the denoising network, called as `unet(x_t, t).sample`; any module with that
            signature and a `config` with `sample_size` and `in_channels` works. A class-conditional UNet has
            `num_class_embeds` = K + 1 and is called as `unet(x_t, t, class_labels=y)`: labels 0..K-1 are the
            classes and K, the last, is the "no label" token that classifier-free guidance trains (see
            `null_class_label`).
        scheduler (`SimpleDDPMScheduler` or another diffusers scheduler): the noise schedule and sampler. A
            diffusers `DDPMScheduler` (as in checkpoints saved by `DDPMPipeline`, e.g. google/ddpm-cifar10-32) is
            converted from its config. Any scheduler built from the config samples (`DDIMScheduler`,
            `DPMSolverMultistepScheduler`, `EulerDiscreteScheduler`, ...: `X.from_config(pipe.scheduler.config)`);
            `elbo` needs a `SimpleDDPMScheduler`.
        class_names (`list[str]`, *optional*): the names of the K classes of a class-conditional UNet, in label
            order; saved in model_index.json (a diffusers-only user may ignore them). Without them, classes are
            chosen by index.

    Example:

    ```py
    import torch
    from simple_ddpm import SimpleDDPMPipeline

    pipe = SimpleDDPMPipeline.from_pretrained("outputs/simple-ddpm")  # a folder train.py wrote, or a Hub repo id
    images = pipe(batch_size=4, num_inference_steps=25, generator=torch.Generator().manual_seed(0)).images
    images[0].save("sample.png")

    channels, size = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    x0 = torch.randint(0, 256, (2, channels, size, size)) / 127.5 - 1  # two 8-bit images in [-1, 1]
    print(pipe.elbo(x0, num_inference_steps=25).bits_per_dim)  # the bound of the 25-step sampler, bits/dim
    ```
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["image", "pred_original_sample"]

    def __init__(
        self, unet: UNet2DModel | torch.nn.Module, scheduler: SchedulerMixin, class_names: list[str] | None = None
    ):
        # UNet2DModel named in the hint: `from_pipe` hands over a ModelMixin only when its type is in the hint.
        super().__init__()
        num_class_embeds = getattr(unet.config, "num_class_embeds", None)
        if class_names is not None:
            class_names = [str(name) for name in class_names]
            if num_class_embeds is None:
                raise ValueError("class_names were given but the UNet is unconditional (no num_class_embeds).")
            if len(class_names) != num_class_embeds - 1:
                raise ValueError(
                    f"Got {len(class_names)} class_names for a UNet with num_class_embeds={num_class_embeds}, which "
                    f"holds {num_class_embeds - 1} classes and the no-label token."
                )
            if len(set(class_names)) != len(class_names):
                raise ValueError(f"class_names must be distinct, got {class_names}.")
        if num_class_embeds is not None and num_class_embeds < 2:
            raise ValueError(
                f"A class-conditional UNet needs num_class_embeds >= 2 (classes + the no-label token), got "
                f"{num_class_embeds}."
            )
        if isinstance(scheduler, DDPMScheduler):
            logger.info("Converting DDPMScheduler to SimpleDDPMScheduler from its config.")
            scheduler = SimpleDDPMScheduler.from_config(scheduler.config)
        if not isinstance(scheduler, SchedulerMixin):
            raise TypeError(
                f"SimpleDDPMPipeline needs a diffusers scheduler (a SimpleDDPMScheduler, or e.g. "
                f"DDIMScheduler.from_config(its config)), got {type(scheduler).__name__}."
            )
        if isinstance(unet, torch.nn.Module):
            use_float32_attention(unet)  # bf16 attention with small heads is slow on CPUs: see float32_attention
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(class_names=class_names)

    @property
    def num_classes(self) -> int | None:
        """K, the number of classes of a class-conditional UNet; None for an unconditional one."""
        num_class_embeds = getattr(self.unet.config, "num_class_embeds", None)
        return None if num_class_embeds is None else num_class_embeds - 1

    @property
    def null_class_label(self) -> int | None:
        """The "no label" token, K (the UNet's last class embedding); None for an unconditional UNet."""
        return self.num_classes

    def class_label_tensor(self, class_labels: ClassLabels | None, batch_size: int) -> torch.Tensor | None:
        """`class_labels` as a (batch_size,) long tensor of indices: each an index in [0, K) or a class name; one
        label (an int or a name) is used for the whole batch. None gives the no-label token K on a conditional
        model (sampling p(x)), and None on an unconditional one. Raises `ValueError` with the valid values."""
        if self.num_classes is None:
            if class_labels is not None:
                raise ValueError(
                    "class_labels were given but this model is unconditional (its UNet has no class embeddings)."
                )
            return None
        if class_labels is None:
            return torch.full((batch_size,), self.null_class_label, dtype=torch.long)
        if isinstance(class_labels, torch.Tensor):
            if class_labels.is_floating_point() or class_labels.ndim > 1:
                raise ValueError(
                    f"class_labels must be integers (one per image), got a {class_labels.dtype} tensor of shape "
                    f"{tuple(class_labels.shape)}."
                )
            class_labels = class_labels.reshape(-1).tolist() if class_labels.ndim else int(class_labels)
        if not isinstance(class_labels, list | tuple):
            class_labels = [class_labels] * batch_size
        if len(class_labels) != batch_size:
            raise ValueError(
                f"Got {len(class_labels)} class_labels for {batch_size} images; pass one per image, or one for all."
            )
        return torch.tensor([self._class_index(label) for label in class_labels], dtype=torch.long)

    def _class_index(self, label: int | str) -> int:
        names = self.config.get("class_names")
        if isinstance(label, str):
            if names is None:
                raise ValueError(
                    f"Unknown class name {label!r}: this model has no class names; pass an index in "
                    f"[0, {self.num_classes})."
                )
            if label not in names:
                raise ValueError(f"Unknown class name {label!r}; valid names are: {', '.join(names)}.")
            return names.index(label)
        if isinstance(label, bool) or not isinstance(label, numbers.Integral):
            raise ValueError(f"A class label is an int or a class name, got {label!r}.")
        label = int(label)
        if not 0 <= label <= self.null_class_label:
            raise ValueError(
                f"Class label {label} is out of range; valid labels are 0..{self.num_classes - 1} "
                f"({self.null_class_label}: no label)."
            )
        return label

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "SimpleDDPMPipeline":
        """As `DiffusionPipeline.from_pretrained`, but the weights load from safetensors only: a pickled `.bin`
        can run arbitrary code when it is loaded. `use_safetensors=False` opts in to pickles from a trusted
        source. Code shipped in the folder or repo runs only with `trust_remote_code=True` (diffusers' rule).

        Raises:
            `OSError`: naming the folder when it holds pickled weights only, and how to convert them.
        """
        kwargs.setdefault("use_safetensors", True)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except OSError:
            folder = Path(pretrained_model_name_or_path)
            pickles = sorted(folder.glob("*/*.bin"))
            if not (kwargs["use_safetensors"] and pickles):
                raise
            raise OSError(
                f"{folder} holds pickled weights only ({pickles[0].relative_to(folder)}); refusing to unpickle "
                "them, which can run arbitrary code. If you trust the folder, convert it once: "
                "SimpleDDPMPipeline.from_pretrained(folder, use_safetensors=False).save_pretrained(folder)."
            ) from None

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """As `DiffusionPipeline.save_pretrained`, then rewritten into the layout of a Hub repo, so that the folder
        is, file for file, what `push_to_hub` uploads and what loads by repo id (see `simple_ddpm.hub`).

        Args:
            save_directory (`str` or `os.PathLike`): the folder.
            kwargs: `safe_serialization`, `variant`, `max_shard_size`, as diffusers takes them. `push_to_hub=True`
                pushes with `push_to_hub`, to `repo_id` (default: the folder's name) with `token`, `private`,
                `commit_message`.
        """
        hub = _hub_module()
        if hub is None:
            return super().save_pretrained(save_directory, **kwargs)
        push = kwargs.pop("push_to_hub", False)
        push_names = ("repo_id", "token", "private", "commit_message")
        push_kwargs = {name: kwargs.pop(name) for name in push_names if name in kwargs}
        super().save_pretrained(save_directory, **kwargs)
        hub.make_hub_layout(save_directory)
        if push:
            self.push_to_hub(push_kwargs.pop("repo_id", Path(save_directory).name), **push_kwargs, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str = "Upload SimpleDDPMPipeline",
        private: bool | None = None,
        token: str | None = None,
        **save_kwargs,
    ) -> str:
        """Upload the pipeline with its model card to `repo_id`, in one commit; return the commit's URL.

        Write access is checked first (`simple_ddpm.hub.prepare_repo`). The card carries the held-out bits/dim and
        samples when the pipeline was loaded from a folder trained by training/train.py and its weights are still
        the ones measured there; otherwise it says what the configuration is and that nothing was measured.

        Args:
            repo_id (`str`): "USER/NAME"; created if missing.
            commit_message (`str`): the commit's title.
            private (`bool`, *optional*): visibility of a newly created repo.
            token (`str`, *optional*): default: `HF_TOKEN`, then the stored login.
            save_kwargs: passed to `save_pretrained` (`safe_serialization`, `variant`, ...).
        """
        hub = _hub_module()
        if hub is None:
            raise ImportError(
                "Pushing a SimpleDDPMPipeline needs the simple_ddpm package: pip install -e . in its checkout."
            )
        return hub.push_pipeline(
            self, repo_id, commit_message=commit_message, private=private, token=token, **save_kwargs
        )

    def _unet_dtype(self) -> torch.dtype:
        parameter = next(self.unet.parameters(), None)
        return torch.float32 if parameter is None else parameter.dtype

    def sampling_precision(self, mixed_precision: str, batch_shape: tuple[int, ...]) -> str:
        """The autocast precision of the UNet's calls: `mixed_precision` unless it is "auto"; "auto" is "bf16"
        where the device has native bf16 and bf16 autocast measured faster than float32 on it for this UNet and
        batch shape (a few calls, cached per machine: `simple_ddpm.hardware.measured_precision`), else "no". A
        UNet whose weights are not float32, or a network that is no diffusers model, runs as it is ("no")."""
        if mixed_precision not in SAMPLING_PRECISIONS:
            raise ValueError(
                f"Unknown mixed_precision {mixed_precision!r}; valid values are: {', '.join(SAMPLING_PRECISIONS)}."
            )
        if mixed_precision != "auto":
            return mixed_precision
        if not isinstance(self.unet, ModelMixin):  # e.g. a test's exact denoiser: nothing to measure
            return "no"
        parameter = next(self.unet.parameters(), None)
        if parameter is None or parameter.dtype != torch.float32 or not native_bf16(parameter.device.type):
            return "no"  # emulated bf16 is slower (see `simple_ddpm.hardware.resolve_mixed_precision`)
        key = measurement_key(self.unet, batch_shape, training=False)
        return measured_precision(key, lambda: unet_seconds(self.unet, batch_shape, training=False)).precision

    def _check_channels(self) -> None:
        """A learned-variance scheduler needs a UNet with 2C output channels, a fixed one C: one line otherwise.
        Other diffusers schedulers are left to check what they need."""
        output_channels = getattr(self.unet.config, "out_channels", None)
        if output_channels is not None and isinstance(self.scheduler, SimpleDDPMScheduler):
            self.scheduler.check_output_channels(output_channels, self.unet.config.in_channels)

    def _predict(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        guidance_scale: float = 0.0,
    ) -> torch.Tensor:
        """The network's output at float32 `sample` (2C channels with a learned variance), in float32 whatever the
        UNet's dtype. With `guidance_scale` w != 0, the conditional and the no-label outputs come from one call on
        a batch of 2B and are combined by `classifier_free_guidance` (the variance channels: the conditional's)."""
        sample = sample.to(self._unet_dtype())
        if class_labels is None:
            return self.unet(sample, timestep).sample.float()
        if guidance_scale == 0:
            return self.unet(sample, timestep, class_labels=class_labels).sample.float()
        both_labels = torch.cat([class_labels, torch.full_like(class_labels, self.null_class_label)])
        both_timesteps = torch.cat([timestep, timestep]) if timestep.ndim else timestep
        output = self.unet(torch.cat([sample, sample]), both_timesteps, class_labels=both_labels).sample.float()
        conditional, unconditional = output.chunk(2)
        return classifier_free_guidance(conditional, unconditional, guidance_scale, channels=sample.shape[1])

    def _step_kwargs(self, generator: torch.Generator | list[torch.Generator] | None, eta: float | None) -> dict:
        """`generator` and `eta` for the scheduler's `step`, where it takes them (diffusers' rule)."""
        parameters = inspect.signature(self.scheduler.step).parameters
        kwargs = {"generator": generator} if "generator" in parameters else {}
        if eta is not None:
            if "eta" not in parameters:
                raise ValueError(f"{type(self.scheduler).__name__} takes no eta; leave eta unset.")
            kwargs["eta"] = eta
        return kwargs

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        eta: float | None = None,
        callback_on_step_end: Callable[["SimpleDDPMPipeline", int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        class_labels: ClassLabels | None = None,
        guidance_scale: float = 0.0,
        mixed_precision: str = "auto",
    ) -> ImagePipelineOutput | tuple:
        """Generate images from x_T ~ N(0, I), by ancestral sampling or the scheduler's sampler. A learned variance
        (`variance_type` "learned_range" or "learned") is read from the UNet's last C output channels.

        Args:
            batch_size (`int`, *optional*): number of images; default: the number of `class_labels` given as a
                list, else 1.
            generator (`torch.Generator` or list of `batch_size` of them, *optional*): seeds the initial noise and
                every step's noise; a list makes each image reproducible on its own.
            num_inference_steps (`int`, *optional*): reverse steps, default 1000; fewer than T respaces the process
                (see `SimpleDDPMScheduler.set_timesteps`). A distilled model (`distilled_timesteps` in its
                scheduler config, training/distill.py) samples its own chain, deterministically, and takes no other.
            output_type (`str`, defaults to "pil"): "pil" (list of PIL images), "np" (float array (B, H, W, C)
                in [0, 1]) or "pt" (float tensor (B, C, H, W) in [0, 1]).
            return_dict (`bool`, defaults to True): return an `ImagePipelineOutput` rather than a tuple.
            eta (`float`, *optional*): passed to the scheduler's `step`: for `SimpleDDPMScheduler`, 1 (the
                default) is DDPM, 0 deterministic DDIM (Song et al. 2021 eq. 16); `DDIMScheduler` takes it too.
            callback_on_step_end (`Callable`, *optional*): called after every step as
                `callback_on_step_end(pipe, step_index, timestep, callback_kwargs)`, where `callback_kwargs` holds
                the tensors named in `callback_on_step_end_tensor_inputs`: "image" (x_{t-1}, the next model input)
                and "pred_original_sample" (x0_hat at this step; None with a scheduler whose step gives none).
                It returns a dict; an "image" in it replaces x_{t-1}.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to ["image"]): from
                `_callback_tensor_inputs`.
            class_labels (`int`, `str`, a list of them, or a tensor, *optional*): for a class-conditional model, the
                class of each image, by index in [0, K) or by name (`pipe.config.class_names`); one label for all.
                None (or the index K) samples p(x) through the no-label token.
            guidance_scale (`float`, defaults to 0): w of classifier-free guidance, eps~ = (1 + w) eps(x_t, y) -
                w eps(x_t, no label) (Ho & Salimans 2022 eq. 6): 0 is the conditional model p(x | y), larger w
                trades diversity for samples more typical of their class. Any `prediction_type` is guided alike
                (`classifier_free_guidance`). w != 0 costs one UNet call on 2B images per step.
            mixed_precision (`str`, defaults to "auto"): autocast of the UNet's calls: "no" (its own dtype), "bf16"
                (bfloat16 autocast), or "auto", the faster of the two as measured on this device for this UNet and
                batch (see `sampling_precision`).

        The sample is kept in float32 between steps; a float16 or bfloat16 UNet sees it cast to its dtype.
        """
        batch_size, labels = self._check_call_options(batch_size, generator, class_labels, guidance_scale, output_type)
        tensor_inputs = callback_on_step_end_tensor_inputs or ["image"]
        unknown = [name for name in tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} are unknown; valid values are: "
                f"{', '.join(self._callback_tensor_inputs)}."
            )
        chain, eta = distilled_sampling(self.scheduler, num_inference_steps, eta)
        step_kwargs = self._step_kwargs(generator, eta)
        self._check_channels()
        device = self._execution_device
        labels = labels.to(device) if labels is not None else None
        self.scheduler.set_timesteps(**chain, device=device)
        timesteps = self.scheduler.timesteps.to(device)
        # Python numbers for the scheduler: no host-device sync inside the loop.
        steps = self.scheduler.timesteps.tolist()

        shape = _sample_shape(self.unet, batch_size)
        unet_batch = (batch_size * (2 if guidance_scale != 0 else 1), *shape[1:])
        bf16 = self.sampling_precision(mixed_precision, unet_batch) == "bf16"
        image = randn_tensor(shape, generator=generator, device=device)
        image = image * self.scheduler.init_noise_sigma
        for i, t in enumerate(self.progress_bar(steps)):
            model_input = self.scheduler.scale_model_input(image, timesteps[i])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                model_output = self._predict(model_input, timesteps[i], labels, guidance_scale)
            output = self.scheduler.step(model_output, t, image, **step_kwargs)
            image = output.prev_sample
            if callback_on_step_end is not None:
                tensors = {"image": image, "pred_original_sample": getattr(output, "pred_original_sample", None)}
                callback_kwargs = {name: tensors[name] for name in tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                image = callback_outputs.get("image", image)

        return self._images_output(image, output_type, return_dict)

    def _check_call_options(
        self,
        batch_size: int | None,
        generator: torch.Generator | list[torch.Generator] | None,
        class_labels: ClassLabels | None,
        guidance_scale: float,
        output_type: str,
    ) -> tuple[int, torch.Tensor | None]:
        """The options every sampling call of this pipeline and of the editing pipelines shares, checked: returns the
        batch size (default: one per label in a list, else 1) and the labels as `class_label_tensor` gives them."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Unknown output_type {output_type!r}; valid values are: {', '.join(OUTPUT_TYPES)}.")
        if batch_size is None:
            several = isinstance(class_labels, list) or (isinstance(class_labels, torch.Tensor) and class_labels.ndim)
            batch_size = len(class_labels) if several else 1
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        labels = self.class_label_tensor(class_labels, batch_size)
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0 (0: no guidance), got {guidance_scale}.")
        if guidance_scale != 0 and class_labels is None:
            raise ValueError(
                "guidance_scale needs class_labels (a class-conditional model and the classes to guide to)."
            )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for batch_size={batch_size}; pass one per image.")
        return batch_size, labels

    def _images_output(self, image: torch.Tensor, output_type: str, return_dict: bool) -> ImagePipelineOutput | tuple:
        """x_0 in [-1, 1] as `output_type` asks ("pil", "np" or "pt", in [0, 1]), in an `ImagePipelineOutput`."""
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            images = image
        else:
            images = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    @torch.no_grad()
    def elbo(
        self,
        images: torch.Tensor,
        *,
        generator: torch.Generator | list[torch.Generator] | None = None,
        batch_size: int | None = None,
        num_timesteps: int | None = None,
        class_labels: ClassLabels | None = None,
        num_inference_steps: int | None = None,
    ) -> ELBOOutput:
        """The negative ELBO of each image in bits/dim, term by term (Ho et al. eq. 5).

        Every term is evaluated at one draw x_t ~ q(x_t | x_0) per image and timestep, in float64 from the
        network's output (float32 on a device without float64, Apple MPS). Conventions follow improved-diffusion's
        `calc_bpd_loop` (Nichol & Dhariwal 2021): x0_hat is clipped when the scheduler's `clip_sample` is set; at
        t = 1 the model's variance is sigma^2(2) (the clipped log-variance); the decoder is the discretized
        Gaussian on the 8-bit grid, bin width 2/255, the edge bins open to infinity, with the exact normal CDF
        (improved-diffusion uses a tanh approximation). With a learned variance, every term uses the variance the
        network outputs.

        Args:
            images (`torch.Tensor` of shape `(B, C, H, W)`): x_0, floats in [-1, 1] on the 8-bit grid
                (k / 127.5 - 1 for integers k in [0, 255]).
            generator (`torch.Generator` or list of B of them, *optional*): for the noise draws.
            batch_size (`int`, *optional*): the most (image, timestep) pairs per network call; default B.
                Several timesteps share a call when B is smaller.
            num_timesteps (`int`, *optional*): K < T - 1 gives an unbiased estimate: L_0 exactly, and the T - 1
                terms L_1..L_{T-1} split into K contiguous strata (`geometric_strata`) with one term drawn
                uniformly from each and scaled by its stratum's size. The strata grow geometrically with t, so
                the first terms, which dominate the bound, are evaluated exactly; uniform sampling of K terms
                would be unbiased too, but its variance is many times larger.
            class_labels (`int`, `str`, a list of them, or a tensor, *optional*): for a class-conditional model, each
                image's class (as in `__call__`): the bound on -log p(x | y). None: the no-label token, the bound
                on -log p(x) of the same network. No guidance: the guided sampler has no bound.
            num_inference_steps (`int`, *optional*): K: instead of the T-step bound, the exact bound of the K-step
                chain that `__call__(num_inference_steps=K)` samples at eta = 1 (the scheduler's `timestep_spacing`
                and variance: fixed, learned or analytic): prior at the chain's first step, its K - 1 KL terms
                (`SimpleDDPMScheduler.chain_vb_terms_bpd`) and its decoder; K network calls per image. `denoising`
                then has K - 1 columns, the chain's terms from its last step back to its first (t increasing).
        """
        return negative_elbo(
            self,
            images,
            generator=generator,
            batch_size=batch_size,
            num_timesteps=num_timesteps,
            class_labels=class_labels,
            num_inference_steps=num_inference_steps,
        )

    @torch.no_grad()
    def estimate_analytic_variance(
        self,
        images: torch.Tensor | Iterable[torch.Tensor],
        *,
        generator: torch.Generator | None = None,
        batch_size: int = 256,
        class_labels: ClassLabels | None = None,
        estimator: str = "prediction_error",
    ) -> torch.Tensor:
        """Estimate G_t = E_q ||eps_theta(x_t, t)||^2 / d for every training timestep (Bao et al. 2022, Analytic-DPM)
        and switch the pipeline's scheduler to `variance_type="analytic"` with it; return G (T floats, float64).

        One noise draw per image and timestep: M images cost M x T network calls (Bao et al. App. G.2 find M = 10
        to 100 as good as 50,000). The table serves every number of steps, every timestep spacing and every eta.
        Save the pipeline to keep it (it is `analytic_mean_squared_eps` in scheduler_config.json).

        Args:
            images (`torch.Tensor` of shape `(M, C, H, W)`, or an iterable of such batches): training images x_0
                in [-1, 1].
            generator (`torch.Generator`, *optional*): for the noise draws.
            batch_size (`int`, defaults to 256): the most (image, timestep) pairs per network call.
            class_labels (*optional*): for a class-conditional model, as in `elbo`; None uses the no-label token,
                the model of p(x) (one table serves sampling with and without labels).
            estimator (`str`, defaults to "prediction_error"): "mean_squared_eps" is Bao et al.'s Monte Carlo
                mean of ||eps_hat||^2 / d. "prediction_error" is 1 - E||eps - eps_hat||^2 / d over the same draws:
                the same number for an exact network (E<eps, eps_hat> = E||eps_hat||^2 when eps_hat = E[eps | x_t]),
                and for any network the one that makes sigma*^2 = lambda^2 + coef_x0^2 E||x_0 - x0_hat||^2 / d, the
                KL-optimal variance for the network's own mean (coef_x0 is eq. 12's factor; Bao et al. 2022b,
                Extended Analytic-DPM, study this imperfect-mean case). Its Monte Carlo error is far smaller where
                1 - G_t is tiny (large t), which is what eq. 9's long steps and `optimal_timesteps` multiply: there
                ||eps_hat||^2 / d varies by sqrt(2 / d) per image while 1 - G_t is about SNR_t.
        """
        if estimator not in ANALYTIC_ESTIMATORS:
            raise ValueError(f"Unknown estimator {estimator!r}; valid values are: {', '.join(ANALYTIC_ESTIMATORS)}.")
        scheduler = self.scheduler
        if not isinstance(scheduler, SimpleDDPMScheduler):
            raise TypeError(
                f"estimate_analytic_variance needs a SimpleDDPMScheduler, and this pipeline has "
                f"{type(scheduler).__name__}; set pipe.scheduler back to the SimpleDDPMScheduler it was trained with."
            )
        if scheduler.learns_variance:
            raise ValueError(
                f"This model learns its own reverse variance (variance_type={scheduler.config.variance_type!r}); "
                "the analytic variance is for models trained with a fixed one."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self._check_channels()
        batches = [images] if isinstance(images, torch.Tensor) else images
        T = len(scheduler)
        device = self._execution_device
        sum_squares = torch.zeros(T, dtype=table_dtype(device), device=device)  # of eps_hat, or of eps - eps_hat
        count = 0
        # M x T network evaluations; M is unknown in advance for an iterator of batches
        total = T * sum(len(batch) for batch in batches) if isinstance(batches, list | tuple) else None
        progress = tqdm(
            total=total, desc="analytic variance: image x timestep pairs", **getattr(self, "_progress_bar_config", {})
        )
        for batch in batches:
            if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or not batch.is_floating_point():
                raise ValueError("images must be float (M, C, H, W) tensors in [-1, 1], or an iterable of them.")
            if batch.min().item() < -1 - 1e-6 or batch.max().item() > 1 + 1e-6:
                raise ValueError("images must lie in [-1, 1] (x / 127.5 - 1 for 8-bit pixels x).")
            x0 = batch.to(device=device, dtype=torch.float32)
            labels = self.class_label_tensor(class_labels, len(x0))
            images_per_call = min(len(x0), batch_size)
            steps_per_call = max(1, batch_size // images_per_call)
            for start in range(0, len(x0), images_per_call):
                x0_rows = x0[start : start + images_per_call]
                labels_rows = None if labels is None else labels[start : start + images_per_call].to(device)
                for first in range(0, T, steps_per_call):
                    ts = list(range(first, min(T, first + steps_per_call)))
                    squares = self._analytic_squares(x0_rows, labels_rows, ts, generator, estimator)
                    sum_squares[first : first + len(ts)] += squares
                    progress.update(len(ts) * len(x0_rows))
            count += len(x0)
        progress.close()
        if count == 0:
            raise ValueError("estimate_analytic_variance got no images.")
        mean_squared_eps = (sum_squares / count).cpu().double()
        if estimator == "prediction_error":
            mean_squared_eps = 1 - mean_squared_eps  # below 0 where the network's error exceeds the noise
        self.scheduler = SimpleDDPMScheduler.from_config(
            scheduler.config, variance_type="analytic", analytic_mean_squared_eps=mean_squared_eps.tolist()
        )
        return mean_squared_eps

    def _analytic_squares(
        self,
        x0: torch.Tensor,
        labels: torch.Tensor | None,
        timesteps: list[int],
        generator: torch.Generator | None,
        estimator: str,
    ) -> torch.Tensor:
        """Sum over the images `x0` of ||eps_hat||^2 / d ("mean_squared_eps") or ||eps - eps_hat||^2 / d
        ("prediction_error") at each of `timesteps`, one noise draw per pair, in one network call (float64)."""
        t = torch.tensor(timesteps, device=x0.device).repeat_interleave(len(x0))
        x0_rep = x0.repeat(len(timesteps), 1, 1, 1)
        noise = randn_tensor(x0_rep.shape, generator=generator, device=x0.device, dtype=torch.float32)
        x_t = self.scheduler.add_noise(x0_rep, noise, t)
        labels_rep = None if labels is None else labels.repeat(len(timesteps))
        dtype = table_dtype(x0.device)
        output = self._predict(x_t, t, labels_rep).to(dtype)
        eps = self.scheduler.predicted_noise(output, x_t.to(dtype), t)
        if estimator == "prediction_error":
            eps = eps - noise.to(dtype)
        return eps.square().flatten(1).mean(1).view(len(timesteps), -1).sum(1)
