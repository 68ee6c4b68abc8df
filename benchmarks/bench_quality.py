"""Sample quality at a fixed training budget on Fashion-MNIST: prediction type, loss weighting, sampling steps.

    python benchmarks/fashion_mnist.py     # once: the IDX files to benchmarks/_work/fashion_mnist
    python benchmarks/bench_quality.py     # trains, evaluates, writes the grids, prints the table
    python benchmarks/bench_quality.py --table   # the table again, from the results on disk

Four runs of training/train.py at the same budget (--steps x --batch-size images, the same seed, data order and
schedule), differing in one option each: epsilon vs sample prediction (Ho et al.'s Design II vs I) with the
simple loss, and simple vs elbo vs min_snr weighting with epsilon. Each is evaluated on the first --eval-images
test images with the unbiased K-timestep estimate of the negative ELBO: the images are split into groups, each
group gets its own K random timesteps (`SimpleDDPMPipeline.elbo(num_timesteps=K)`), and the standard error is
that of the group means, so it covers the choice of timesteps as well as the noise and the images. The main
run (epsilon, simple) also gets the exact bound (all T terms) on the first --full-elbo-images test images, and
10x10 sample grids at 1000, 250, 100 and 50 steps (benchmarks/fashion_mnist_<N>steps.png).

Jobs run as subprocesses in two lanes, one torch thread each (two lanes for two cores); every job writes its
result under benchmarks/_work/quality and is skipped when that result exists, so an interrupted run resumes.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from simple_ddpm import SimpleDDPMPipeline
from simple_ddpm.image_processing import image_grid, pixels_to_model_input

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
WORK = BENCHMARKS / "_work" / "quality"
DATASET = BENCHMARKS / "_work" / "fashion_mnist"
MAIN_RUN = "epsilon-simple"
# name -> (prediction_type, loss_weighting)
RUNS = {
    MAIN_RUN: ("epsilon", "simple"),
    "sample-simple": ("sample", "simple"),
    "epsilon-elbo": ("epsilon", "elbo"),
    "epsilon-min_snr": ("epsilon", "min_snr"),
}
GRID_STEPS = (1000, 250, 100, 50)
GRID_CELL = 56  # 28x28 samples upscaled 2x, so that a 10x10 grid is 570 px wide and under 300 KB


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run (default 600)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--preset", default="tiny", help="train.py --model_preset (default tiny)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=50, help="lr warmup steps (default 50)")
    parser.add_argument("--eval-images", type=int, default=1000, help="test images evaluated (default 1000)")
    parser.add_argument("--eval-group", type=int, default=20, help="images per group of the estimate (default 20)")
    parser.add_argument("--eval-timesteps", type=int, default=16, help="K of the estimate (default 16)")
    parser.add_argument(
        "--full-elbo-images", type=int, default=20, help="test images of the main run's exact bound (default 20)"
    )
    parser.add_argument("--eval-batch-size", type=int, default=500, help="(image, t) pairs per UNet call")
    parser.add_argument("--lanes", type=int, choices=(1, 2, 3), default=2, help="jobs at the same time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    parser.add_argument(
        "--code",
        type=Path,
        default=REPO,
        help="run DIR/training/train.py with DIR/src on PYTHONPATH, e.g. a `git archive` snapshot, so that edits "
        "to the working tree during the runs do not change them (default: this repository)",
    )
    parser.add_argument("--work", type=Path, default=WORK, help=f"results and runs (default {WORK})")
    parser.add_argument(
        "--grid-steps", type=int, nargs="+", default=GRID_STEPS, help="sampling steps of the grids (1000 250 100 50)"
    )
    parser.add_argument("--grid-dir", type=Path, default=BENCHMARKS, help="where the sample grids go")
    parser.add_argument("--table", action="store_true", help="only print the table from the results on disk")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: run one job in this process
    return parser.parse_args(argv)


def train_command(args: argparse.Namespace, run: str) -> list[str]:
    """train.py for one run; its own final sample grid and bound are made trivial, the jobs below do them."""
    prediction_type, loss_weighting = RUNS[run]
    return [
        sys.executable,
        str(args.code / "training" / "train.py"),
        f"--dataset_name={DATASET}",
        "--eval_split=test",
        "--num_eval_images=16",
        f"--model_preset={args.preset}",
        f"--prediction_type={prediction_type}",
        f"--loss_weighting={loss_weighting}",
        f"--train_batch_size={args.batch_size}",
        f"--max_train_steps={args.steps}",
        f"--learning_rate={args.learning_rate}",
        f"--lr_warmup_steps={args.warmup}",
        "--seed=0",
        "--report_to=none",
        "--logging_steps=50",
        "--sample_every=0",
        "--eval_every=0",
        "--checkpointing_steps=0",
        "--num_samples=1",
        "--num_inference_steps=10",
        "--final_eval_timesteps=1",
        f"--output_dir={args.work / run}",
    ]


def result_path(args: argparse.Namespace, job: str) -> Path:
    return args.work / "results" / f"{job.replace(':', '-')}.json"


def test_images(count: int) -> torch.Tensor:
    """The first `count` Fashion-MNIST test images as x_0 in [-1, 1], shape (count, 1, 28, 28)."""
    import datasets

    test = datasets.load_from_disk(str(DATASET))["test"].select(range(count))
    pixels = np.stack([np.asarray(image) for image in test["image"]])
    return pixels_to_model_input(torch.from_numpy(pixels)[:, None])


def load_pipeline(args: argparse.Namespace, run: str) -> SimpleDDPMPipeline:
    pipe = SimpleDDPMPipeline.from_pretrained(args.work / run)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def grouped_bound(pipe: SimpleDDPMPipeline, images: torch.Tensor, group: int, timesteps: int, batch_size: int) -> dict:
    """The unbiased K-timestep estimate of the mean bits/dim of `images`, group by group: each group of `group`
    images gets its own K random timesteps, so the group means are independent estimates and their standard
    error covers the choice of timesteps as well as the noise and the images."""
    group_means, start = [], time.perf_counter()
    for g, first in enumerate(range(0, len(images), group)):
        bits = pipe.elbo(
            images[first : first + group].to(pipe.device),
            generator=torch.Generator().manual_seed(1000 + g),
            batch_size=batch_size,
            num_timesteps=timesteps,
        ).bits_per_dim
        group_means.append(bits.mean().item())
    return {
        "bits_per_dim": statistics.fmean(group_means),
        "standard_error": statistics.stdev(group_means) / len(group_means) ** 0.5,
        "group_means": group_means,
        "images": len(images),
        "groups": len(group_means),
        "timesteps": timesteps,
        "seconds": time.perf_counter() - start,
    }


def estimate_bound(args: argparse.Namespace, run: str) -> dict:
    pipe, images = load_pipeline(args, run), test_images(args.eval_images)
    return grouped_bound(pipe, images, args.eval_group, args.eval_timesteps, args.eval_batch_size)


def exact_bound(args: argparse.Namespace, run: str) -> dict:
    """The exact bound, all T terms, on the first --full-elbo-images test images."""
    pipe, images = load_pipeline(args, run), test_images(args.full_elbo_images)
    start = time.perf_counter()
    output = pipe.elbo(images, generator=torch.Generator().manual_seed(0), batch_size=args.eval_batch_size)
    bits = output.bits_per_dim
    return {
        "bits_per_dim": bits.mean().item(),
        "standard_error": (bits.std() / len(bits) ** 0.5).item(),  # over images: the bound of a random image
        "prior": output.prior.mean().item(),
        "reconstruction": output.reconstruction.mean().item(),
        "denoising": output.denoising.sum(-1).mean().item(),
        "images": len(images),
        "seconds": time.perf_counter() - start,
    }


def sample_grid(args: argparse.Namespace, run: str, steps: int) -> dict:
    """A 10x10 grid of the same 100 seeds (so grids at different step counts compare) after `steps` steps."""
    pipe, start = load_pipeline(args, run), time.perf_counter()
    images = pipe(
        batch_size=100, generator=torch.Generator().manual_seed(0), num_inference_steps=steps, output_type="pt"
    ).images
    seconds = time.perf_counter() - start
    path = args.grid_dir / f"fashion_mnist_{steps}steps.png"
    image_grid(images, cell_size=GRID_CELL).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KB, {seconds:.0f} s", flush=True)
    return {"steps": steps, "seconds": seconds, "path": str(path)}


JOBS = {"estimate": estimate_bound, "exact": exact_bound, "grid": sample_grid}


def run_job_here(args: argparse.Namespace) -> None:
    kind, run, *options = args.job.split(":")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    while not (args.work / run / "metrics.json").is_file():  # its training runs in the other lane
        time.sleep(10)
    result = JOBS[kind](args, run, *map(int, options))
    path = result_path(args, args.job)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def job_command(args: argparse.Namespace, job: str) -> list[str]:
    kind, run, *_ = job.split(":")
    if kind == "train":
        return train_command(args, run)
    forwarded = [a for a in sys.argv[1:] if not a.startswith("--job")]
    return [sys.executable, str(Path(__file__).resolve()), *forwarded, f"--job={job}"]


def job_done(args: argparse.Namespace, job: str) -> bool:
    kind, run, *_ = job.split(":")
    if kind == "train":
        return (args.work / run / "metrics.json").is_file()
    return result_path(args, job).is_file()


def run_lane(args: argparse.Namespace, jobs: list[str], failures: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.code / "src"), env.get("PYTHONPATH")]))
    for job in jobs:
        if job_done(args, job):
            continue
        log = args.work / "logs" / f"{job.replace(':', '-')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"{time.strftime('%H:%M:%S')} start {job} (log {log})", flush=True)
        start = time.perf_counter()
        with log.open("w") as out:
            status = subprocess.call(job_command(args, job), stdout=out, stderr=subprocess.STDOUT, env=env)
        print(f"{time.strftime('%H:%M:%S')} end {job}: exit {status}, {time.perf_counter() - start:.0f} s", flush=True)
        if status != 0:
            failures.append(job)
            return  # later jobs of a lane need this one


def lanes(args: argparse.Namespace) -> list[list[str]]:
    """The jobs in --lanes lanes of about equal length: the trainings first, two at a time, then the
    evaluations; the main run's grids and exact bound take a third lane when there is one. A job that needs
    another lane's training waits for it."""
    first = [f"train:{MAIN_RUN}", "train:epsilon-elbo", "estimate:epsilon-elbo", f"estimate:{MAIN_RUN}"]
    second = ["train:sample-simple", "train:epsilon-min_snr", "estimate:epsilon-min_snr", "estimate:sample-simple"]
    third = [f"grid:{MAIN_RUN}:{steps}" for steps in args.grid_steps] + [f"exact:{MAIN_RUN}"]
    if args.lanes == 1:
        return [first + second + third]
    if args.lanes == 2:
        return [first + third[:1], second + third[1:]]
    return [first, second, third]


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def print_table(args: argparse.Namespace) -> None:
    print(f"Fashion-MNIST, {args.preset} UNet, {args.steps} steps x {args.batch_size} images")
    print(
        f"estimate: {args.eval_images} test images in groups of {args.eval_group}, K = {args.eval_timesteps} "
        "random timesteps per group (+ L_0), mean +- standard error of the group means\n"
    )
    header = f"{'run':18} {'prediction':>10} {'weighting':>9} {'images seen':>11} {'train s':>8}"
    print(header + f" {'bits/dim (estimate)':>20} {'minus main, paired':>19}")
    print("-" * (len(header) + 41))
    main_estimate = read_json(result_path(args, f"estimate:{MAIN_RUN}"))
    for run, (prediction_type, weighting) in RUNS.items():
        metrics = read_json(args.work / run / "metrics.json")
        estimate = read_json(result_path(args, f"estimate:{run}"))
        seen = f"{metrics['images_seen']:,}" if metrics else "-"
        wall = f"{metrics['wall_time_s']:.0f}" if metrics else "-"
        bound = f"{estimate['bits_per_dim']:.3f} +- {estimate['standard_error']:.3f}" if estimate else "not run"
        paired = "-"
        if estimate and main_estimate and run != MAIN_RUN:
            # The groups use the same images, timesteps and noise in every run, so differences pair up.
            differences = [a - b for a, b in zip(estimate["group_means"], main_estimate["group_means"], strict=True)]
            error = statistics.stdev(differences) / len(differences) ** 0.5
            paired = f"{statistics.fmean(differences):+.3f} +- {error:.3f}"
        print(f"{run:18} {prediction_type:>10} {weighting:>9} {seen:>11} {wall:>8} {bound:>20} {paired:>19}")
    exact = read_json(result_path(args, f"exact:{MAIN_RUN}"))
    if exact:
        print(
            f"\n{MAIN_RUN}, exact bound (all T terms) on the first {exact['images']} test images: "
            f"{exact['bits_per_dim']:.3f} +- {exact['standard_error']:.3f} bits/dim (prior {exact['prior']:.4f}, "
            f"L_0 {exact['reconstruction']:.3f}, sum of L_1..L_T-1 {exact['denoising']:.3f}); {exact['seconds']:.0f} s"
        )
        estimate = read_json(result_path(args, f"estimate:{MAIN_RUN}"))
        if estimate and exact["images"] >= args.eval_group:
            groups = exact["images"] // args.eval_group
            same = estimate["group_means"][:groups]
            print(f"the estimate on the same {exact['images']} images: {statistics.fmean(same):.3f}")
    grids = [read_json(result_path(args, f"grid:{MAIN_RUN}:{steps}")) for steps in args.grid_steps]
    times = ", ".join(f"{grid['steps']} steps {grid['seconds']:.0f} s" for grid in grids if grid)
    print(f"\nsample grids of {MAIN_RUN} (100 images, one batch): {times or 'not run'}")


def main() -> None:
    args = parse_args()
    if args.job:
        run_job_here(args)
        return
    if not args.table:
        if not DATASET.is_dir():
            sys.exit(f"No dataset at {DATASET}: run `python benchmarks/fashion_mnist.py` first.")
        failures: list[str] = []
        threads = [threading.Thread(target=run_lane, args=(args, jobs, failures)) for jobs in lanes(args)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            print(f"failed: {', '.join(failures)} (see {args.work / 'logs'})", flush=True)
    print_table(args)


if __name__ == "__main__":
    main()
