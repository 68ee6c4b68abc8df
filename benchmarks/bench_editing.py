"""Editing with the Fashion-MNIST model: RePaint inpainting (FD, error of the kept pixels, time), DDIM inversion's
reconstruction error against steps, and the pictures (inpainting grid, img2img strip, interpolation strip).

    python benchmarks/fashion_mnist.py      # once: the dataset
    python benchmarks/bench_editing.py      # the issue's full grid: hours of CPU
    python benchmarks/bench_editing.py --num-images 100 --configs center:100:1 lower:100:1 --inversion-steps 50 100
    python benchmarks/bench_editing.py --table   # the tables again, from the results on disk

The model is bench_quality.py's main run (epsilon prediction, simple loss), loaded, never trained here (--model).
Inpainting configurations are MASK:STEPS:RESAMPLINGS, MASK "center" (the centre 14 x 14 square) or "lower" (the
lower half), jump length --jump-length (10, the paper's); the first --num-images test images are inpainted, image i
with the generator seeded i. Each is compared by Frechet distance with the 10,000 test images, in the features of
bench_fid.py's classifier (trained there, or here when missing, into its folder), beside two reference rows at the
same count: the same test images untouched (the floor that finite samples leave) and with the hole black (the
masked input). Inversion encodes the first --inversion-images test images to x_T and decodes them at each of
--inversion-steps. Every job writes its result under --work/results and is skipped when that exists.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from simple_ddpm import SimpleDDPMImg2ImgPipeline, SimpleDDPMInpaintPipeline, SimpleDDPMInversionPipeline
from simple_ddpm.feature_networks import ClassifierFeatures
from simple_ddpm.frechet import frechet_distance
from simple_ddpm.image_processing import image_grid, pixels_to_model_input
from simple_ddpm.pipeline_simple_ddpm_inpaint import repaint_levels
from simple_ddpm.sample_quality import pixel_statistics

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

import bench_fid  # noqa: E402
import bench_quality  # noqa: E402

WORK = BENCHMARKS / "_work" / "editing"
MASKS = ("center", "lower")
DEFAULT_CONFIGS = [f"{mask}:{steps}:{r}" for mask in MASKS for steps in (100, 250) for r in (1, 5, 10)]
STRENGTHS = (0.1, 0.25, 0.5, 0.75, 1.0)
CELL = 56  # 28x28 images upscaled 2x


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=bench_quality.WORK / bench_quality.MAIN_RUN)
    parser.add_argument("--num-images", type=int, default=1000, help="test images inpainted per configuration")
    parser.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS, help="MASK:STEPS:RESAMPLINGS")
    parser.add_argument("--jump-length", type=int, default=10)
    parser.add_argument("--inversion-images", type=int, default=100)
    parser.add_argument("--inversion-steps", type=int, nargs="*", default=[50, 100, 1000])
    parser.add_argument("--picture-steps", type=int, default=100, help="steps of the pictures' chains")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--pictures", type=Path, default=BENCHMARKS, help="folder of the PNGs")
    parser.add_argument("--table", action="store_true", help="only the tables, from the results on disk")
    return parser.parse_args(argv)


def parse_config(config: str) -> tuple[str, int, int]:
    mask, steps, resamplings = config.split(":")
    if mask not in MASKS or not steps.isdigit() or not resamplings.isdigit():
        raise SystemExit(f"error: {config!r} is not MASK:STEPS:RESAMPLINGS with MASK one of {', '.join(MASKS)}")
    return mask, int(steps), int(resamplings)


def make_mask(name: str) -> torch.Tensor:
    """(1, 1, 28, 28), 1 = fill: the centre 14 x 14 square, or the lower half."""
    mask = torch.zeros(1, 1, 28, 28)
    if name == "center":
        mask[..., 7:21, 7:21] = 1
    else:
        mask[..., 14:, :] = 1
    return mask


def result_path(args: argparse.Namespace, job: str, count: int) -> Path:
    return args.work / "results" / f"{job.replace(':', '-')}-{count}.json"


def save(args: argparse.Namespace, job: str, count: int, result: dict) -> None:
    path = result_path(args, job, count)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"{job}: {result}", flush=True)


def generators(count: int, start: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(start + i) for i in range(count)]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] to the 8-bit pixels a saved PNG holds."""
    return (images * 255).round().to(torch.uint8)


def inpaint(args, pipe, pixels: torch.Tensor, mask: torch.Tensor, steps: int, resamplings: int) -> torch.Tensor:
    """uint8 results of inpainting `pixels` (N, 1, 28, 28), image i with the generator seeded i."""
    batches = []
    for start in range(0, len(pixels), args.batch_size):
        x0 = pixels_to_model_input(pixels[start : start + args.batch_size])
        out = pipe(
            x0,
            mask,
            num_inference_steps=steps,
            jump_length=min(args.jump_length, steps - 1),
            jump_n_sample=resamplings,
            batch_size=len(x0),
            generator=generators(len(x0), start),
            output_type="pt",
        ).images
        batches.append(to_uint8(out))
    return torch.cat(batches)


def measure_inpainting(args, config: str, pipe, pixels, extractor, test) -> None:
    mask_name, steps, resamplings = parse_config(config)
    mask = make_mask(mask_name)
    start, cpu_start = time.perf_counter(), time.process_time()
    filled = inpaint(args, pipe, pixels, mask, steps, resamplings)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    keep, hole = mask[0, 0] == 0, mask[0, 0] == 1
    difference = filled.float() - pixels.float()
    statistics = pixel_statistics(extractor, filled, batch_size=1000, progress=False)
    save(
        args,
        f"inpaint:{config}",
        len(pixels),
        {
            "mask": mask_name,
            "steps": steps,
            "resamplings": resamplings,
            "jump_length": min(args.jump_length, steps - 1),
            "fd": frechet_distance(statistics, test),
            "kept_max_abs_error": difference[..., keep].abs().max().item(),  # 8-bit levels
            "hole_rmse": difference[..., hole].pow(2).mean().sqrt().item(),  # 8-bit levels, against the original
            "seconds_per_image": seconds / len(pixels),
            "cpu_seconds_per_image": cpu_seconds / len(pixels),  # one thread: as on a core of its own
            "unet_calls_per_image": unet_calls(repaint_levels(steps, min(args.jump_length, steps - 1), resamplings)),
        },
    )


def unet_calls(levels: list[int]) -> int:
    """The steps down a RePaint schedule: one network call each."""
    return sum(b > a for a, b in zip(levels[:-1], levels[1:], strict=True))


def reference_rows(args, pixels, extractor, test) -> None:
    """The test images untouched, and with each mask's hole black, at --num-images."""
    rows = {"reference:test": pixels}
    for name in MASKS:
        rows[f"reference:masked:{name}"] = torch.where(make_mask(name).bool(), torch.zeros_like(pixels), pixels)
    for job, images in rows.items():
        if not result_path(args, job, len(pixels)).is_file():
            statistics = pixel_statistics(extractor, images, batch_size=1000, progress=False)
            save(args, job, len(pixels), {"fd": frechet_distance(statistics, test)})


def measure_inversion(args, pipe, pixels: torch.Tensor, steps: int) -> None:
    x0 = pixels_to_model_input(pixels)
    start, cpu_start = time.perf_counter(), time.process_time()
    latents = pipe.invert(x0, num_inference_steps=steps)
    decoded = pipe(latents, num_inference_steps=steps, output_type="pt").images
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    error = to_uint8(decoded).float() - pixels.float()
    save(
        args,
        f"inversion:{steps}",
        len(pixels),
        {
            "steps": steps,
            "rmse": error.pow(2).mean().sqrt().item(),  # 8-bit levels
            "mean_abs_error": error.abs().mean().item(),
            "max_abs_error": error.abs().max().item(),
            "latent_std": latents.std().item(),
            "seconds_per_image": seconds / len(pixels),
            "cpu_seconds_per_image": cpu_seconds / len(pixels),  # one thread: as on a core of its own
        },
    )


def draw_pictures(args, model: Path, pixels: torch.Tensor) -> None:
    """Inpainting grid (per mask: masked input, inpainted, original), img2img strip, interpolation strip."""
    steps = args.picture_steps
    inpainter = SimpleDDPMInpaintPipeline.from_pretrained(model)
    inpainter.set_progress_bar_config(disable=True)
    rows = []
    for name in MASKS:
        mask = make_mask(name)
        chosen = pixels[:8]
        masked = torch.where(mask.bool(), torch.full_like(chosen, 128), chosen)  # the hole grey, to be seen
        filled = inpaint(args, inpainter, chosen, mask, steps, 5)
        rows += [masked, filled, chosen]
    image_grid(torch.cat(rows).float() / 255, cell_size=CELL, cols=8).save(args.pictures / "editing_inpaint.png")

    img2img = SimpleDDPMImg2ImgPipeline.from_pipe(inpainter)
    img2img.set_progress_bar_config(disable=True)
    cells = []
    for i in range(4):
        x0 = pixels_to_model_input(pixels[i : i + 1])
        cells.append(pixels[i : i + 1].float() / 255)
        for strength in STRENGTHS:
            out = img2img(
                x0,
                strength=strength,
                num_inference_steps=steps,
                generator=torch.Generator().manual_seed(i),
                output_type="pt",
            ).images
            cells.append(out)
    image_grid(torch.cat(cells), cell_size=CELL, cols=1 + len(STRENGTHS)).save(args.pictures / "editing_img2img.png")

    inversion = SimpleDDPMInversionPipeline.from_pipe(inpainter)
    inversion.set_progress_bar_config(disable=True)
    frames = []
    for a, b in ((0, 1), (2, 5)):
        ends = [pixels_to_model_input(pixels[i : i + 1]) for i in (a, b)]
        for interpolation in ("slerp", "linear"):
            frames.append(
                inversion.interpolate(
                    *ends, num_frames=8, num_inference_steps=steps, interpolation=interpolation, output_type="pt"
                ).images
            )
    image_grid(torch.cat(frames), cell_size=CELL, cols=8).save(args.pictures / "editing_interpolation.png")
    print(f"Wrote editing_inpaint.png, editing_img2img.png, editing_interpolation.png to {args.pictures}", flush=True)


def timing(result: dict) -> str:
    """Wall seconds per image, and the process's CPU seconds where measured: on a shared machine the CPU time is
    what the work costs a core of its own (one thread)."""
    cpu = result.get("cpu_seconds_per_image")
    return f"{result['seconds_per_image']:.2f}" + ("" if cpu is None else f" ({cpu:.2f} CPU)")


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def print_tables(args) -> None:
    n = args.num_images
    print(f"\nInpainting, {n} test images per row, jump length {args.jump_length}; FD against the 10,000 test images")
    print(
        "| mask | steps | resamplings | UNet calls / image | FD | kept pixels, max abs error | hole RMSE vs original "
        "| s / image (CPU s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in MASKS:
        masked = read(result_path(args, f"reference:masked:{name}", n))
        if masked:
            print(f"| {name} | masked input (hole black) | | | {masked['fd']:.1f} | | | |")
        for config in args.configs:
            result = read(result_path(args, f"inpaint:{config}", n))
            if result and result["mask"] == name:
                print(
                    f"| {name} | {result['steps']} | {result['resamplings']} | {result['unet_calls_per_image']} | "
                    f"{result['fd']:.1f} | {result['kept_max_abs_error']:.0f} | {result['hole_rmse']:.1f} | "
                    f"{timing(result)} |"
                )
    floor = read(result_path(args, "reference:test", n))
    if floor:
        print(f"| none | {n} test images themselves (the floor) | | | {floor['fd']:.1f} | | | |")
    print(f"\nDDIM inversion then decoding, {args.inversion_images} test images, errors in 8-bit levels")
    print("| steps | RMSE | mean abs error | max abs error | std of x_T | s / image, both ways (CPU s) |")
    print("|---|---|---|---|---|---|")
    for steps in args.inversion_steps:
        result = read(result_path(args, f"inversion:{steps}", args.inversion_images))
        if result:
            print(
                f"| {steps} | {result['rmse']:.2f} | {result['mean_abs_error']:.2f} | {result['max_abs_error']:.0f} | "
                f"{result['latent_std']:.3f} | {timing(result)} |"
            )


def main() -> None:
    args = parse_args()
    for config in args.configs:
        parse_config(config)
    if not args.table:
        torch.set_num_threads(args.threads)
        if not (args.model / "model_index.json").is_file():
            raise SystemExit(f"error: no trained pipeline at --model {args.model}; run bench_quality.py first")
        fid_args = argparse.Namespace(work=bench_fid.WORK, classifier_epochs=2)
        classifier = bench_fid.train_classifier(fid_args)
        print(f"Feature classifier: test accuracy {classifier['test_accuracy']:.4f}", flush=True)
        extractor = ClassifierFeatures(bench_fid.WORK / "classifier.safetensors")
        test = bench_fid.test_statistics(fid_args, extractor)
        test_pixels = bench_fid.fashion_mnist_pixels("test")[0]
        pixels = test_pixels[: args.num_images]
        reference_rows(args, pixels, extractor, test)
        if not (args.pictures / "editing_interpolation.png").is_file():
            draw_pictures(args, args.model, test_pixels)
        inversion = SimpleDDPMInversionPipeline.from_pretrained(args.model)
        inversion.set_progress_bar_config(disable=True)
        for steps in args.inversion_steps:
            if not result_path(args, f"inversion:{steps}", args.inversion_images).is_file():
                measure_inversion(args, inversion, test_pixels[: args.inversion_images], steps)
        inpainter = SimpleDDPMInpaintPipeline.from_pipe(inversion)
        inpainter.set_progress_bar_config(disable=True)
        for config in args.configs:
            if not result_path(args, f"inpaint:{config}", len(pixels)).is_file():
                measure_inpainting(args, config, inpainter, pixels, extractor, test)
    print_tables(args)


if __name__ == "__main__":
    main()
