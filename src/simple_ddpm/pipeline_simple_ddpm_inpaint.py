"""Inpainting with an unconditionally trained DDPM by RePaint (Lugmayr et al. 2022), as a diffusers pipeline."""

import torch
from diffusers import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from .editing_inputs import (
    ImageInput,
    MaskInput,
    default_batch_size,
    image_format,
    image_to_model_input,
    mask_to_tensor,
    simple_ddpm_scheduler,
)
from .pipeline_simple_ddpm import ClassLabels
from .pipeline_simple_ddpm_editing import SimpleDDPMEditingPipeline


def repaint_levels(num_inference_steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """The levels the chain visits, in order: level i is x after i of the n reverse steps (0: x_T, n: x_0).

    RePaint's schedule (Lugmayr et al. 2022, sec. 4.2 and fig. 3): going down, at each level p = j, 2j, ... below
    n the chain jumps back up to p - j, `jump_n_sample` - 1 times, and comes down again, so the j steps above p are
    walked `jump_n_sample` times. j = 1 is Algorithm 1 with U = `jump_n_sample`. A step up of more than one level
    is one draw of q(x_{t'} | x_t), the same in distribution as the paper's j single forward steps.
    """
    jumps_left = dict.fromkeys(range(jump_length, num_inference_steps, jump_length), jump_n_sample - 1)
    level, levels = 0, [0]
    while level < num_inference_steps:
        level += 1
        levels.append(level)
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            level -= jump_length
            levels.append(level)
    return levels


# RePaint's jump length j (Lugmayr et al. 2022, sec. 4.2); a chain of n steps fits at most n - 1.
DEFAULT_JUMP_LENGTH = 10


def fitted_jump_length(num_inference_steps: int) -> int:
    """The default jump length for n steps: `DEFAULT_JUMP_LENGTH`, shrunk to the n - 1 that a shorter chain fits."""
    return max(1, min(DEFAULT_JUMP_LENGTH, num_inference_steps - 1))


def check_jump_length(num_inference_steps: int, jump_length: int) -> None:
    """A jump back of j levels needs j < n (any j when n is 1)."""
    n = num_inference_steps
    if not isinstance(jump_length, int) or not 1 <= jump_length < max(n, 2):
        raise ValueError(f"jump_length must be an integer in [1, {max(n - 1, 1)}] for {n} steps, got {jump_length!r}.")


class SimpleDDPMInpaintPipeline(SimpleDDPMEditingPipeline):
    """Fill the masked region of an image with a trained DDPM, by RePaint (Lugmayr et al. 2022): at every reverse
    step the known pixels are a fresh draw of q(x_{t-1} | x_0) from the image, the unknown ones the model's step,
    and jumps back up the chain (resampling) let the two agree. No training for the task: any `SimpleDDPMPipeline`
    folder loads as this class, or `SimpleDDPMInpaintPipeline.from_pipe(pipe)` shares a loaded one's components.

    Example:

    ```py
    from PIL import Image
    from simple_ddpm import SimpleDDPMInpaintPipeline

    pipe = SimpleDDPMInpaintPipeline.from_pretrained("outputs/simple-ddpm")
    photo = Image.open("photo.png")  # the model's size and channels
    mask = Image.open("mask.png")  # grayscale, white where the model fills in
    pipe(photo, mask, num_inference_steps=50, jump_n_sample=2).images[0].save("inpainted.png")
    ```
    """

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        mask_image: MaskInput,
        num_inference_steps: int = 250,
        jump_length: int | None = None,
        jump_n_sample: int = 10,
        batch_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels: ClassLabels | None = None,
        guidance_scale: float = 0.0,
    ) -> ImagePipelineOutput | tuple:
        """Inpaint `image` where `mask_image` is white.

        Args:
            image (PIL image, list of them, or `torch.Tensor`): the image(s), the model's size and channels; a
                tensor is x_0 in [-1, 1], (C, H, W) or (B, C, H, W). One image is used for the whole batch.
            mask_image (grayscale PIL image, list of them, or `torch.Tensor` in [0, 1]): white (>= 0.5) = fill,
                black = keep, as diffusers' inpainting pipelines read it. One mask is used for the whole batch.
            num_inference_steps (`int`, defaults to 250): n, reverse steps of the respaced chain (the paper: 250).
            jump_length (`int`, *optional*): j, the levels of each jump back (`repaint_levels`); default 10, or
                n - 1 for a chain of n <= 10 steps (`fitted_jump_length`).
            jump_n_sample (`int`, defaults to 10): r, how often each stretch of j steps is walked; 1: no resampling
                (each of the n steps once). The network is called about n r times.
            batch_size (`int`, *optional*): number of results; default: the number of images (or labels) given.
            generator (`torch.Generator` or list of `batch_size` of them, *optional*): every draw's noise.
            output_type (`str`, defaults to "pil"): "pil", "np" or "pt", as `SimpleDDPMPipeline`.
            return_dict (`bool`, defaults to True): an `ImagePipelineOutput` rather than a tuple.
            class_labels, guidance_scale: a class-conditional model's class and classifier-free guidance, as in
                `SimpleDDPMPipeline.__call__`.

        The kept pixels of the result are the input's exactly (after the last step the known region is x_0 itself),
        so a PNG of the result holds the input's 8-bit pixels there.
        """
        scheduler = simple_ddpm_scheduler(self, "inpainting")
        channels, height, width = image_format(self.unet)
        x0 = image_to_model_input(image, channels, height, width)
        fill = mask_to_tensor(mask_image, height, width)
        batch_size = default_batch_size(batch_size, class_labels, len(x0), len(fill))
        batch_size, labels = self._check_call_options(batch_size, generator, class_labels, guidance_scale, output_type)
        for what, tensor in (("images", x0), ("masks", fill)):
            if len(tensor) not in (1, batch_size):
                raise ValueError(f"Got {len(tensor)} {what} for batch_size={batch_size}; pass one, or one per result.")
        n = num_inference_steps
        device = self._execution_device
        scheduler.set_timesteps(n, device=device)  # checks n
        if not isinstance(jump_n_sample, int) or jump_n_sample < 1:
            raise ValueError(f"jump_n_sample must be an integer >= 1 (1: no resampling), got {jump_n_sample!r}.")
        if jump_length is None:
            jump_length = fitted_jump_length(n)
        if jump_n_sample > 1:
            check_jump_length(n, jump_length)
        self._check_channels()
        labels = labels.to(device) if labels is not None else None
        x0 = x0.to(device).expand(batch_size, -1, -1, -1)
        fill = fill.to(device).expand(batch_size, channels, -1, -1)

        steps = scheduler.timesteps.tolist() + [-1]  # the timestep of each level; -1: the data
        timesteps = scheduler.timesteps.to(device)
        step_kwargs = {"generator": generator}

        def noise() -> torch.Tensor:
            return randn_tensor(x0.shape, generator=generator, device=device, dtype=x0.dtype)

        x = noise()
        levels = repaint_levels(n, jump_length, jump_n_sample)
        for level, next_level in zip(self.progress_bar(levels[:-1]), levels[1:], strict=True):
            if next_level < level:  # resampling: back up the chain
                x = scheduler.add_noise_between(x, noise(), steps[level], steps[next_level])
                continue
            model_output = self._predict(x, timesteps[level], labels, guidance_scale)
            unknown = scheduler.step(model_output, steps[level], x, **step_kwargs).prev_sample
            t = steps[next_level]
            known = x0 if t == -1 else scheduler.add_noise(x0, noise(), torch.tensor([t], device=device))
            x = torch.where(fill, unknown, known)
        return self._images_output(x, output_type, return_dict)
