"""The quickstart under each --recipe: held-out bits/dim (trained and analytic variance) and the digits' FD.

    python benchmarks/bench_quickstart.py                        # ddpm and balanced (train what is missing)
    python benchmarks/bench_quickstart.py --recipes ddpm balanced likelihood samples

Each recipe's run is the README's quickstart, `accelerate launch training/train.py --recipe R` (the tiny UNet,
2,000 steps of 128 of the 1,617 training digits), trained under benchmarks/_work/quickstart/R when its folder has
no metrics.json (train.py's metrics.json times it). Then, for every run:
- the exact bound on the 180 held-out digits with train.py's images, seed and noise, with the trained variance
  (what train.py reports) and with the analytic variance (Bao et al. 2022; the table train.py stores), per image,
  so the difference of two recipes is paired (the same images and noise);
- the Frechet distance of --num-samples samples (image i from seed i, so every row starts from the same x_T;
  DDPM at 100 and at 1,000 steps) to all 1,797 digits, in the features of bench_distill.py's digit classifier;
  and again at 100 steps from seeds 1000 on (other x_T): how much FD moves with the samples alone.
"""

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(REPO))

import bench_distill  # noqa: E402
from bench_distill import digits_pixels, feature_extractor  # noqa: E402

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler  # noqa: E402
from simple_ddpm.frechet import frechet_distance  # noqa: E402
from simple_ddpm.sample_quality import pixel_statistics  # noqa: E402
from simple_ddpm.sampling import generate_images  # noqa: E402
from training.arguments import parse_args as train_args  # noqa: E402
from training.image_data import prepare_images  # noqa: E402
from training.recipes import DEFAULT_RECIPE, RECIPES  # noqa: E402
from training.train import held_out_bits  # noqa: E402

# (DDPM steps, seed of image 0): the second 100-step row, from other x_T, measures the sampling noise of FD
SAMPLE_RUNS = ((100, 0), (1000, 0), (100, 1000))
VARIANCES = ("trained", "analytic")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=["ddpm", DEFAULT_RECIPE])
    parser.add_argument("--work", type=Path, default=BENCHMARKS / "_work" / "quickstart")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per Frechet distance")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the measurements")
    parser.add_argument(
        "--mixed-precision",
        help="train.py --mixed_precision for the runs (default: train.py's auto; `no` keeps float32 on a CPU with "
        "native bf16, to compare with runs on one without)",
    )
    return parser.parse_args(argv)


def train(args, recipe: str) -> float:
    """The run's folder, trained when it has no metrics.json; train.py's own wall time of the run."""
    folder = args.work / recipe
    if not (folder / "metrics.json").is_file():
        command = ["accelerate", "launch", "training/train.py", "--recipe", recipe, "--output_dir", str(folder)]
        command += [] if args.mixed_precision is None else ["--mixed_precision", args.mixed_precision]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=REPO)
    return json.loads((folder / "metrics.json").read_text())["wall_time_s"]


def bounds(pipe: SimpleDDPMPipeline, eval_pixels: torch.Tensor, options) -> dict[str, torch.Tensor]:
    """Per-image exact bits/dim, train.py's final bound, with the trained and the analytic variance."""
    trained = pipe.scheduler
    per_image = {}
    for name, variance in zip(VARIANCES, (trained.config.variance_type, "analytic"), strict=True):
        pipe.scheduler = SimpleDDPMScheduler.from_config(trained.config, variance_type=variance)
        per_image[name] = held_out_bits(pipe, eval_pixels, options, None).double()
    pipe.scheduler = trained
    return per_image


def frechet(pipe: SimpleDDPMPipeline, features: tuple, num_samples: int, steps: int, seed: int) -> float:
    """FD of `num_samples` DDPM samples (image i from seed + i) to the digits' `features` (extractor, statistics)."""
    extractor, reference = features
    images = generate_images(pipe, num_samples, batch_size=500, seed=seed, num_inference_steps=steps, progress=False)
    pixels = (images.float() * 255).round().to(torch.uint8)
    return frechet_distance(pixel_statistics(extractor, pixels, batch_size=500, progress=False), reference)


def measure(args, recipe: str, eval_pixels: torch.Tensor, options, features: tuple) -> dict:
    """The row of `recipe`, each measurement kept on disk once made."""
    path = args.work / f"{recipe}.json"
    row = json.loads(path.read_text()) if path.is_file() else {}
    pipe = bench_distill.load(args.work / recipe)
    if "bounds" not in row:
        per_image = bounds(pipe, eval_pixels, options)
        torch.save(per_image, args.work / f"{recipe}_bits.pt")
        row["bounds"] = {name: bits.mean().item() for name, bits in per_image.items()}
    for steps, seed in SAMPLE_RUNS:
        name = f"fd_{steps}" if seed == 0 else f"fd_{steps}_seed{seed}"
        if name not in row:
            row[name] = frechet(pipe, features, args.num_samples, steps, seed)
        path.write_text(json.dumps(row, indent=2))
    return row


def paired(recipe: str, base: str, work: Path, variance: str) -> str:
    a = torch.load(work / f"{recipe}_bits.pt")[variance]
    b = torch.load(work / f"{base}_bits.pt")[variance]
    difference = a - b
    return f"{difference.mean().item():+.3f} +- {difference.std().item() / math.sqrt(len(difference)):.3f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    options = train_args([])  # the quickstart's data split, seed and batch size
    eval_pixels = prepare_images(options).eval
    extractor = feature_extractor(argparse.Namespace(work=args.work))
    features = (extractor, pixel_statistics(extractor, digits_pixels(), batch_size=500, progress=False))
    rows = {}
    for recipe in args.recipes:
        wall = train(args, recipe)
        rows[recipe] = measure(args, recipe, eval_pixels, options, features) | {"wall_s": wall}
    base = args.recipes[0]
    print(
        f"| recipe | bits/dim, trained variance (train.py's) | minus {base}'s, paired | bits/dim, analytic variance "
        f"| minus {base}'s, paired | FD, {args.num_samples} samples, 100 steps | FD, 1,000 steps "
        "| FD, 100 steps, other x_T | train.py's wall time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for recipe, row in rows.items():
        trained, analytic = ("-", "-") if recipe == base else (paired(recipe, base, args.work, v) for v in VARIANCES)
        print(
            f"| {recipe} | {row['bounds']['trained']:.4f} | {trained} | {row['bounds']['analytic']:.4f} | {analytic} "
            f"| {row['fd_100']:.2f} | {row['fd_1000']:.2f} | {row['fd_100_seed1000']:.2f} "
            f"| {row['wall_s'] / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
