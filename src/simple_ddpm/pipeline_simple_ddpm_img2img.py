"""Image-to-image with a trained DDPM: SDEdit (Meng et al. 2022), and denoising a given x_t from its step t."""

import numpy as np
import torch
from diffusers import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from .editing_inputs import (
    ImageInput,
    default_batch_size,
    image_format,
    image_to_model_input,
    simple_ddpm_scheduler,
)
from .pipeline_simple_ddpm import ClassLabels
from .pipeline_simple_ddpm_editing import SimpleDDPMEditingPipeline


def steps_run(strength: float, num_inference_steps: int) -> int:
    """int(strength n), the steps SDEdit runs, as diffusers counts them; rounded first, so 0.3 of 10 is 3, not 2."""
    return int(round(strength * num_inference_steps, 9))


class SimpleDDPMImg2ImgPipeline(SimpleDDPMEditingPipeline):
    """Edit an image by noising it part of the way up the chain and sampling back down (SDEdit, Meng et al. 2022):
    x_t ~ q(x_t | x_0) at the step that `strength` picks, then the reverse chain from t. Strength 1 is an ordinary
    sample (x_T carries sqrt(alpha_bar_T) x_0 of the input, 0.006 x_0 for the linear schedule); a small strength
    touches the image up. With `start_timestep`, the input is taken as x_t itself ("denoise from step t").

    Any `SimpleDDPMPipeline` folder loads as this class; `SimpleDDPMImg2ImgPipeline.from_pipe(pipe)` shares a
    loaded one's components.

    Example:

    ```py
    from PIL import Image
    from simple_ddpm import SimpleDDPMImg2ImgPipeline

    pipe = SimpleDDPMImg2ImgPipeline.from_pretrained("outputs/simple-ddpm")
    photo = Image.open("photo.png")  # the model's size and channels
    pipe(photo, strength=0.3, num_inference_steps=50).images[0].save("touched_up.png")
    ```
    """

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        strength: float | None = 0.5,
        num_inference_steps: int = 1000,
        start_timestep: int | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels: ClassLabels | None = None,
        guidance_scale: float = 0.0,
    ) -> ImagePipelineOutput | tuple:
        """Run the reverse chain from the input noised to a step, or from the input as x_t.

        Args:
            image (PIL image, list of them, or `torch.Tensor`): x_0 (the model's size and channels; a tensor in
                [-1, 1]); with `start_timestep`, x_t, a tensor of any values. One image is used for the whole batch.
            strength (`float` in (0, 1], defaults to 0.5): how far up the chain the input is noised, as diffusers'
                img2img pipelines read it: of the `num_inference_steps` steps of the respaced chain, the last
                int(strength n) are run, starting from x_t ~ q(x_t | x_0) at the first of them (Ho et al. eq. 4).
            num_inference_steps (`int`, defaults to 1000): n, the steps of the whole chain; about strength n run.
                With `start_timestep` t: the steps run, n of the t + 1 steps t, ..., 0, evenly spaced.
            start_timestep (`int`, *optional*): t in [0, T - 1]: `image` is x_t at step t (table index t; the
                paper's t + 1) and is denoised from there, nothing added. `strength` must then be None.
            batch_size (`int`, *optional*): number of results; default: the number of images (or labels) given.
            generator (`torch.Generator` or list of `batch_size` of them, *optional*): the noise draws.
            eta (`float`, *optional*): the step's noise weight, 1 (DDPM, default) to 0 (deterministic DDIM).
            output_type, return_dict, class_labels, guidance_scale: as `SimpleDDPMPipeline.__call__`.
        """
        scheduler = simple_ddpm_scheduler(self, "img2img")
        channels, height, width = image_format(self.unet)
        T = len(scheduler)
        n = num_inference_steps
        if start_timestep is None:
            if strength is None or not 0 < strength <= 1:
                raise ValueError(f"strength must lie in (0, 1] (1: an ordinary sample), got {strength}.")
            x = image_to_model_input(image, channels, height, width)
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= T:
                raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {n!r}.")
            if steps_run(strength, n) < 1:
                raise ValueError(f"strength={strength} of {n} steps runs no step (int(strength n) = 0); raise either.")
        else:
            if strength is not None:
                raise ValueError("Pass strength=None with start_timestep: the input is then x_t, noised already.")
            if isinstance(start_timestep, bool) or not isinstance(start_timestep, int) or not 0 <= start_timestep < T:
                raise ValueError(f"start_timestep must be an integer in [0, {T - 1}], got {start_timestep!r}.")
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= start_timestep + 1:
                raise ValueError(
                    f"num_inference_steps must be an integer in [1, {start_timestep + 1}] from step {start_timestep}, "
                    f"got {n!r}."
                )
            x = image[None] if isinstance(image, torch.Tensor) and image.ndim == 3 else image
            if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != (channels, height, width):
                raise ValueError(
                    f"With start_timestep, image is x_t, a float tensor (B, {channels}, {height}, {width}); got "
                    f"{type(image).__name__} {tuple(getattr(image, 'shape', ()))}."
                )
            if not x.is_floating_point() or not torch.isfinite(x).all():
                raise ValueError("x_t must be a tensor of finite floats.")
            x = x.float()
        batch_size = default_batch_size(batch_size, class_labels, len(x))
        batch_size, labels = self._check_call_options(batch_size, generator, class_labels, guidance_scale, output_type)
        if len(x) not in (1, batch_size):
            raise ValueError(f"Got {len(x)} images for batch_size={batch_size}; pass one, or one per result.")
        step_kwargs = self._step_kwargs(generator, eta)
        self._check_channels()
        device = self._execution_device
        labels = labels.to(device) if labels is not None else None
        x = x.to(device).expand(batch_size, -1, -1, -1)

        if start_timestep is None:
            scheduler.set_timesteps(n, device=device)
            first = n - steps_run(strength, n)
            timesteps = scheduler.timesteps[first:]
            noise = randn_tensor(x.shape, generator=generator, device=device, dtype=x.dtype)
            x = scheduler.add_noise(x, noise, timesteps[:1])
        else:
            chosen = np.round(np.linspace(0, start_timestep, n)).astype(np.int64)[::-1].tolist()
            scheduler.set_timesteps(timesteps=chosen, device=device)
            timesteps = scheduler.timesteps
        for t in self.progress_bar(timesteps):
            model_output = self._predict(x, t, labels, guidance_scale)
            x = scheduler.step(model_output, int(t), x, **step_kwargs).prev_sample
        return self._images_output(x, output_type, return_dict)
