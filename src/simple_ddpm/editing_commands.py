"""The `simple-ddpm` commands that edit images with a trained model: inpaint, img2img, interpolate.

    simple-ddpm inpaint MODEL IMAGE MASK [--num-inference-steps 250] [--jump-length 10] [--jump-n-sample 10]
        (the default jump length shrinks to steps - 1 for a shorter chain)
    simple-ddpm img2img MODEL IMAGE --strength S [--num-inference-steps 1000] [--eta E]
    simple-ddpm interpolate MODEL A B --frames N [--num-inference-steps 50] [--interpolation slerp|linear]

each with --num-images (not interpolate), --seed, --class, --guidance-scale and --output (a .png file, else a
folder), as `sample`. The mask is read as diffusers' inpainting pipelines read it: white = fill, black = keep, a
grayscale image of the image's size. Result i uses the generator seeded with seed + i.
"""

import argparse
import math
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from .command_io import UsageError, load_pipeline, parse_class, positive_int, read_image, write_images
from .pipeline_simple_ddpm_img2img import SimpleDDPMImg2ImgPipeline, steps_run
from .pipeline_simple_ddpm_inpaint import (
    DEFAULT_JUMP_LENGTH,
    SimpleDDPMInpaintPipeline,
    check_jump_length,
    fitted_jump_length,
)
from .pipeline_simple_ddpm_inversion import INTERPOLATIONS, SimpleDDPMInversionPipeline


def open_input(path: str, what: str) -> Image.Image:
    try:
        return read_image(Path(path).expanduser())
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file.") from None
    except (UnidentifiedImageError, OSError) as error:
        raise UsageError(f"Cannot read {what} {path}: {error}") from None


def editing_pipeline(args: argparse.Namespace, pipeline_class):
    """The editing pipeline on the loaded components; built directly, not by `from_pipe`, which casts every model
    to a dtype again (and so logs diffusers' "should be kept in float32" warning)."""
    loaded = load_pipeline(args.model, args.revision, args.device, args.dtype)
    pipe = pipeline_class(**loaded.components, class_names=loaded.config.get("class_names"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_class_options(args: argparse.Namespace) -> None:
    """What --class and --guidance-scale need that no model decides, checked before loading one."""
    if args.class_label is None and args.guidance_scale != 0:
        raise UsageError("--guidance-scale needs --class: the class to guide the result to.")


def conditioning(pipe, args: argparse.Namespace) -> dict:
    """class_labels and guidance_scale from --class and --guidance-scale."""
    if args.class_label is None:  # --guidance-scale without --class: refused before loading
        return {}
    if pipe.num_classes is None:
        raise UsageError(f"--class needs a class-conditional model; {args.model} is unconditional.")
    return {"class_labels": parse_class(pipe, args.class_label), "guidance_scale": args.guidance_scale}


def run_pipeline(call, *call_args, **kwargs):
    """A pipeline call whose ValueError (a bad image, mask or option) becomes the command's one-line error."""
    try:
        return call(*call_args, **kwargs)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None


def generators(args: argparse.Namespace, count: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(args.seed + i) for i in range(count)]


def inpaint_jump_length(args: argparse.Namespace) -> int:
    """--jump-length, checked against --num-inference-steps before the model loads; left out, the default shrunk
    to fit (said in one line)."""
    n = args.num_inference_steps
    if args.jump_length is None:
        jump_length = fitted_jump_length(n)
        if jump_length != DEFAULT_JUMP_LENGTH and args.jump_n_sample > 1:
            print(f"--jump-length {jump_length}: the default {DEFAULT_JUMP_LENGTH} shrunk to fit {n} steps")
        return jump_length
    if args.jump_n_sample > 1:
        try:
            check_jump_length(n, args.jump_length)
        except ValueError:
            raise UsageError(
                f"--jump-length {args.jump_length} does not fit {n} steps: pass --jump-length {max(n - 1, 1)} or "
                f"less, or --num-inference-steps {args.jump_length + 1} or more."
            ) from None
    return args.jump_length


def inpaint(args: argparse.Namespace) -> None:
    check_class_options(args)
    jump_length = inpaint_jump_length(args)
    image, mask = open_input(args.image, "IMAGE"), open_input(args.mask, "MASK")
    pipe = editing_pipeline(args, SimpleDDPMInpaintPipeline)
    images = run_pipeline(
        pipe,
        image,
        mask,
        num_inference_steps=args.num_inference_steps,
        jump_length=jump_length,
        jump_n_sample=args.jump_n_sample,
        batch_size=args.num_images,
        generator=generators(args, args.num_images),
        output_type="pt",
        **conditioning(pipe, args),
    ).images
    write_images(images, args.output, "inpainted images")


def img2img(args: argparse.Namespace) -> None:
    check_class_options(args)
    if not 0 < args.strength <= 1:
        raise UsageError(f"--strength must lie in (0, 1] (1: an ordinary sample), got {args.strength}.")
    if steps_run(args.strength, args.num_inference_steps) < 1:
        raise UsageError(
            f"--strength {args.strength} of {args.num_inference_steps} steps runs no step: raise --strength or "
            "--num-inference-steps."
        )
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise UsageError(f"--eta must lie in [0, 1] (0: DDIM, 1: DDPM), got {args.eta}.")
    image = open_input(args.image, "IMAGE")
    pipe = editing_pipeline(args, SimpleDDPMImg2ImgPipeline)
    images = run_pipeline(
        pipe,
        image,
        strength=args.strength,
        num_inference_steps=args.num_inference_steps,
        eta=args.eta,
        batch_size=args.num_images,
        generator=generators(args, args.num_images),
        output_type="pt",
        **conditioning(pipe, args),
    ).images
    write_images(images, args.output, f"images edited at strength {args.strength}")


def interpolate(args: argparse.Namespace) -> None:
    check_class_options(args)
    if args.frames < 2:
        raise UsageError(f"--frames must be at least 2 (both ends), got {args.frames}.")
    first, second = open_input(args.a, "A"), open_input(args.b, "B")
    pipe = editing_pipeline(args, SimpleDDPMInversionPipeline)
    frames = run_pipeline(
        pipe.interpolate,
        first,
        second,
        num_frames=args.frames,
        num_inference_steps=args.num_inference_steps,
        interpolation=args.interpolation,
        output_type="pt",
        **conditioning(pipe, args),
    ).images
    frames = write_images(frames, args.output, f"{args.interpolation} interpolation frames", cols=len(frames))
    output = Path(args.output)
    gif = output.with_suffix(".gif") if output.suffix.lower() == ".png" else output / "interpolation.gif"
    scale = max(1, math.ceil(128 / max(frames[0].size)))
    big = [frame.resize((frame.width * scale, frame.height * scale), Image.Resampling.NEAREST) for frame in frames]
    big[0].save(gif, save_all=True, append_images=big[1:] + big[-2:0:-1], duration=150, loop=0)
    print(f"Wrote the animation, there and back, to {gif}")


def add_editing_commands(commands: argparse._SubParsersAction, model: argparse.ArgumentParser) -> None:
    """The inpaint, img2img and interpolate subcommands, with the `model` parent parser (MODEL, --revision,
    --device, --dtype, --seed)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--class",
        dest="class_label",
        metavar="NAME_OR_INDEX",
        help="a class-conditional model: the class of the result (a name of the model's class_names, or an index)",
    )
    common.add_argument(
        "--guidance-scale",
        type=float,
        default=0.0,
        help="w of classifier-free guidance, (1 + w) eps(x, y) - w eps(x, no label); 0: the conditional model",
    )
    several = argparse.ArgumentParser(add_help=False)
    several.add_argument("--num-images", type=positive_int, default=1, help="results, each from its own seed")

    filling = commands.add_parser(
        "inpaint", parents=[model, common, several], help="fill the white region of a mask (RePaint)"
    )
    filling.add_argument("image", help="the image, the model's size")
    filling.add_argument("mask", help="a grayscale image the image's size: white = fill, black = keep")
    filling.add_argument("--num-inference-steps", type=positive_int, default=250, help="reverse steps (respaced)")
    filling.add_argument(
        "--jump-length",
        type=positive_int,
        help=f"steps of each jump back (RePaint); default {DEFAULT_JUMP_LENGTH}, shrunk to fit a shorter chain "
        "(steps - 1)",
    )
    filling.add_argument(
        "--jump-n-sample", type=positive_int, default=10, help="walks of each stretch; 1: no resampling"
    )
    filling.add_argument("--output", default="inpainted.png", help="a .png file for a grid, else a folder of PNGs")
    filling.set_defaults(run=inpaint)

    editing = commands.add_parser(
        "img2img", parents=[model, common, several], help="noise an image to a step and denoise it (SDEdit)"
    )
    editing.add_argument("image", help="the image, the model's size")
    editing.add_argument(
        "--strength", type=float, required=True, help="in (0, 1]: how far up the chain; 1 is an ordinary sample"
    )
    editing.add_argument("--num-inference-steps", type=positive_int, default=1000, help="steps of the whole chain")
    editing.add_argument("--eta", type=float, help="the noise weight in [0, 1] (1: DDPM, the default; 0: DDIM)")
    editing.add_argument("--output", default="img2img.png", help="a .png file for a grid, else a folder of PNGs")
    editing.set_defaults(run=img2img)

    morphing = commands.add_parser(
        "interpolate", parents=[model, common], help="frames between two images through their DDIM x_T"
    )
    morphing.add_argument("a", help="the first image, the model's size")
    morphing.add_argument("b", help="the last image")
    morphing.add_argument("--frames", type=positive_int, default=8, help="frames, both ends included (>= 2)")
    morphing.add_argument("--num-inference-steps", type=positive_int, default=50, help="DDIM steps each way")
    morphing.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        default="slerp",
        help="slerp: of the two x_T, decoded; linear: a cross-fade of the images, for comparison",
    )
    morphing.add_argument(
        "--output", default="interpolation.png", help="a .png strip (and a .gif beside it), else a folder"
    )
    morphing.set_defaults(run=interpolate)
