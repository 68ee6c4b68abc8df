"""DDIM inversion of images to x_T, decoding back, and interpolation between images through x_T, as a diffusers
pipeline."""

import torch
from diffusers import ImagePipelineOutput

from .editing_inputs import (
    ImageInput,
    image_format,
    image_to_model_input,
    simple_ddpm_scheduler,
)
from .pipeline_simple_ddpm import ClassLabels
from .pipeline_simple_ddpm_editing import SimpleDDPMEditingPipeline
from .scheduling_simple_ddpm import SimpleDDPMScheduler

INTERPOLATIONS = ("slerp", "linear")


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical interpolation per image, sin((1 - w) theta) / sin(theta) a + sin(w theta) / sin(theta) b, theta the
    angle between the flattened a and b (Shoemake 1985; Song et al. 2021 sec. 5.3 for DDIM's x_T); linear where
    the two are parallel. Between two draws of N(0, I) it keeps the norm a Gaussian x_T has, which a straight line
    would shrink by up to 1/sqrt(2) half way."""
    a_flat, b_flat = a.flatten(1).double(), b.flatten(1).double()
    cos = (a_flat * b_flat).sum(1) / (a_flat.norm(dim=1) * b_flat.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1))
    sin = torch.sin(theta)
    parallel = sin < 1e-6
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    weight_a = torch.where(parallel, 1 - weight, torch.sin((1 - weight) * theta) / safe_sin)
    weight_b = torch.where(parallel, torch.full_like(sin, weight), torch.sin(weight * theta) / safe_sin)
    mixed = weight_a[:, None] * a_flat + weight_b[:, None] * b_flat
    return mixed.view_as(a).to(a.dtype)


class SimpleDDPMInversionPipeline(SimpleDDPMEditingPipeline):
    """The deterministic DDIM chain (eta = 0, Song et al. 2021) both ways: `invert` encodes an image to its x_T,
    `__call__` decodes an x_T back to an image, `interpolate` morphs between two images through their x_T.

    Both directions use the pipeline's scheduler with `clip_sample` and `thresholding` off: clipping x0_hat has no
    inverse. The round trip is exact up to the discretisation of the probability-flow ODE: its error falls as
    `num_inference_steps` grows. Any `SimpleDDPMPipeline` folder loads as this class;
    `SimpleDDPMInversionPipeline.from_pipe(pipe)` shares a loaded one's components.

    Example:

    ```py
    from PIL import Image
    from simple_ddpm import SimpleDDPMInversionPipeline

    pipe = SimpleDDPMInversionPipeline.from_pretrained("outputs/simple-ddpm")
    photo = Image.open("photo.png")  # the model's size and channels
    latents = pipe.invert(photo, num_inference_steps=50)  # x_T
    pipe(latents, num_inference_steps=50).images[0].save("round_trip.png")
    frames = pipe.interpolate(photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), num_frames=4).images
    ```
    """

    def _unclipped_scheduler(self, num_inference_steps: int) -> SimpleDDPMScheduler:
        scheduler = simple_ddpm_scheduler(self, "DDIM inversion")
        scheduler = SimpleDDPMScheduler.from_config(scheduler.config, clip_sample=False, thresholding=False)
        scheduler.set_timesteps(num_inference_steps, device=self._execution_device)  # checks the count
        return scheduler

    def _labels(self, class_labels: ClassLabels | None, guidance_scale: float, batch_size: int) -> torch.Tensor | None:
        _, labels = self._check_call_options(batch_size, None, class_labels, guidance_scale, "pt")
        return labels if labels is None else labels.to(self._execution_device)

    @torch.no_grad()
    def invert(
        self,
        image: ImageInput,
        num_inference_steps: int = 50,
        class_labels: ClassLabels | None = None,
        guidance_scale: float = 0.0,
    ) -> torch.Tensor:
        """x_T of each image: the deterministic DDIM chain run forwards from x_0 (`ddim_inverse_step`), on the
        respaced chain of `num_inference_steps` steps, from the data up to its first step (T - 1 for "linspace").

        Args:
            image (PIL image, list of them, or `torch.Tensor` x_0 in [-1, 1]): the model's size and channels.
            num_inference_steps (`int`, defaults to 50): steps of the chain; decode with the same number.
            class_labels, guidance_scale: a class-conditional model's class and guidance, as in `__call__`.
        Returns:
            `torch.Tensor` (B, C, H, W), float32: x_T, the input of `__call__(latents=...)`.
        """
        channels, height, width = image_format(self.unet)
        x = image_to_model_input(image, channels, height, width).to(self._execution_device)
        labels = self._labels(class_labels, guidance_scale, len(x))
        self._check_channels()
        scheduler = self._unclipped_scheduler(num_inference_steps)
        for t in self.progress_bar(scheduler.timesteps.flip(0)):  # from the last step (next to the data) up
            model_output = self._predict(x, t, labels, guidance_scale)
            x = scheduler.ddim_inverse_step(model_output, int(t), x)
        return x

    @torch.no_grad()
    def __call__(
        self,
        latents: torch.Tensor,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels: ClassLabels | None = None,
        guidance_scale: float = 0.0,
    ) -> ImagePipelineOutput | tuple:
        """Decode x_T to images by the deterministic DDIM chain (eta = 0, unclipped).

        Args:
            latents (`torch.Tensor` (B, C, H, W)): x_T, as `invert` returns it, or any draw of N(0, I).
            num_inference_steps (`int`, defaults to 50): steps of the chain; the same as `invert`'s for a round trip.
            output_type, return_dict, class_labels, guidance_scale: as `SimpleDDPMPipeline.__call__`.
        """
        channels, height, width = image_format(self.unet)
        if (
            not isinstance(latents, torch.Tensor)
            or latents.ndim != 4
            or tuple(latents.shape[1:])
            != (
                channels,
                height,
                width,
            )
        ):
            raise ValueError(
                f"latents must be a tensor (B, {channels}, {height}, {width}), got "
                f"{type(latents).__name__} {tuple(getattr(latents, 'shape', ()))}."
            )
        batch_size, labels = self._check_call_options(len(latents), None, class_labels, guidance_scale, output_type)
        labels = labels if labels is None else labels.to(self._execution_device)
        self._check_channels()
        scheduler = self._unclipped_scheduler(num_inference_steps)
        x = latents.float().to(self._execution_device)
        for t in self.progress_bar(scheduler.timesteps):
            model_output = self._predict(x, t, labels, guidance_scale)
            x = scheduler.step(model_output, int(t), x, eta=0.0).prev_sample
        return self._images_output(x, output_type, return_dict)

    @torch.no_grad()
    def interpolate(
        self,
        image_a: ImageInput,
        image_b: ImageInput,
        num_frames: int = 8,
        num_inference_steps: int = 50,
        interpolation: str = "slerp",
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels: ClassLabels | None = None,
        guidance_scale: float = 0.0,
    ) -> ImagePipelineOutput | tuple:
        """`num_frames` images from `image_a` to `image_b`, both ends included.

        Args:
            image_a, image_b (PIL image or `torch.Tensor` x_0 in [-1, 1], one image each): the two ends.
            num_frames (`int`, defaults to 8): at least 2.
            num_inference_steps (`int`, defaults to 50): steps of the inversion and of the decoding.
            interpolation (`str`, defaults to "slerp"): "slerp", spherical interpolation of the two x_T (`invert`)
                decoded frame by frame (the ends are the round trips of the inputs); "linear", the straight
                line between the two x_0 (a cross-fade, no model), for comparison.
            output_type, return_dict, class_labels, guidance_scale: as `SimpleDDPMPipeline.__call__`; one class
                for all frames.
        """
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"Unknown interpolation {interpolation!r}; valid values are: {', '.join(INTERPOLATIONS)}."
            )
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
            raise ValueError(f"num_frames must be an integer >= 2 (the two ends included), got {num_frames!r}.")
        channels, height, width = image_format(self.unet)
        ends = [
            image_to_model_input(image, channels, height, width, what)
            for image, what in ((image_a, "first image"), (image_b, "second image"))
        ]
        if any(len(x) != 1 for x in ends):
            raise ValueError("interpolate takes one image at each end.")
        weights = [i / (num_frames - 1) for i in range(num_frames)]
        if interpolation == "linear":
            self._check_call_options(num_frames, None, class_labels, guidance_scale, output_type)
            frames = torch.cat([torch.lerp(ends[0], ends[1], w) for w in weights])
            return self._images_output(frames, output_type, return_dict)
        latents = self.invert(torch.cat(ends), num_inference_steps, class_labels, guidance_scale)
        frames = torch.cat([slerp(latents[:1], latents[1:], w) for w in weights])
        return self(frames, num_inference_steps, output_type, return_dict, class_labels, guidance_scale)
