"""Sample quality at a fixed training budget on Fashion-MNIST: prediction type, loss weighting, sampling steps.

    python benchmarks/fashion_mnist.py     # once: the IDX files to benchmarks/_work/fashion_mnist
    python benchmarks/bench_quality.py     # trains, evaluates, writes the grids, prints the table
    python benchmarks/bench_quality.py --table   # the table again, from the results on disk

Four runs of training/train.py at the same budget (--steps x --batch-size images, the same seed, data order and
schedule), differing in one option each: epsilon vs sample prediction (Ho et al.'s Design II vs I) with the
simple loss, and simple vs elbo vs min_snr weighting with epsilon. Each is evaluated on the first --eval-images
test images with the exact negative ELBO (prior, L_0 and all T - 1 denoising terms: T UNet calls per image), in
jobs of --shard-images images whose noise is seeded by the shard, so that the runs see the same x_t and their
per-image differences pair up. Each run also gets the cheap unbiased K-timestep estimate
(`SimpleDDPMPipeline.elbo(num_timesteps=K)`) on the same images, in groups with their own random timesteps,
which shows how close the estimate the training script reports comes to the exact bound. The main run
(epsilon, simple) also gets 10x10 sample grids at 1000, 250, 100 and 50 steps
(benchmarks/fashion_mnist_<N>steps.png).

Two more runs train improved DDPM (Nichol & Dhariwal 2021) at the same budget: a learned variance
(`learned_range`) with L_hybrid, and a learned variance with L_vlb alone and importance-sampled timesteps; their
grids are benchmarks/fashion_mnist_<run>_<N>steps.png. `--runs` restricts the benchmark to some runs and
`--skip-exact` leaves out the exact bounds (75 core-minutes per model on 1,000 images).

Jobs run as subprocesses in --lanes lanes (default two, for two cores) that take the next job from one queue,
one torch thread each; every job writes its result under benchmarks/_work/quality and is skipped when that
result exists, so an interrupted run resumes where it stopped. The queue puts the main run's exact bound
first and sample prediction's last (see `job_queue`), so a run stopped early still has its most telling
results.
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
    "learned-hybrid": ("epsilon", "simple"),
    "learned-vlb-is": ("epsilon", "simple"),
    "learned-vlb": ("epsilon", "simple"),
}
# train.py options of the improved-DDPM runs, beyond prediction type and weighting
IMPROVED_RUNS = {
    "learned-hybrid": ["--variance_type=learned_range"],  # + 0.001 L_vlb, the default --vlb_weight
    "learned-vlb-is": ["--variance_type=learned_range", "--loss_type=vlb", "--timestep_sampling=importance"],
    # the same with uniform timesteps: what importance sampling changes (not in the default runs: at 600 steps
    # learned-vlb-is never leaves its uniform warm-up, so the two are the same run; compare them with --steps 1500)
    "learned-vlb": ["--variance_type=learned_range", "--loss_type=vlb"],
}
DEFAULT_RUNS = [run for run in RUNS if run != "learned-vlb"]
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
        "--shard-images", type=int, default=100, help="test images per job of the exact bound (default 100)"
    )
    parser.add_argument(
        "--eval-batch-size",
        type=int,
        default=100,
        help="(image, t) pairs per UNet call (default 100)",
    )
    parser.add_argument("--lanes", type=int, default=2, help="jobs at the same time (default 2)")
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
        "--grid-steps",
        type=int,
        nargs="*",
        default=GRID_STEPS,
        help="sampling steps of the grids (1000 250 100 50; none: no grids)",
    )
    parser.add_argument("--grid-dir", type=Path, default=BENCHMARKS, help="where the sample grids go")
    parser.add_argument("--table", action="store_true", help="only print the table from the results on disk")
    parser.add_argument(
        "--runs",
        nargs="+",
        choices=list(RUNS),
        default=DEFAULT_RUNS,
        help="the runs (default: all but learned-vlb)",
    )
    parser.add_argument("--skip-exact", action="store_true", help="leave out the exact bounds")
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
        # float32 and the reference AdamW, as these runs were first trained (before train.py's bf16 and fused
        # AdamW defaults), so that a run retrained now is the same model as the one in RESULTS.md
        "--mixed_precision=no",
        "--no-fused_adamw",
        *IMPROVED_RUNS.get(run, []),
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


def grouped_bound(
    pipe: SimpleDDPMPipeline,
    images: torch.Tensor,
    group: int,
    timesteps: int,
    batch_size: int,
    class_labels: torch.Tensor | None = None,
) -> dict:
    """The unbiased K-timestep estimate of the mean bits/dim of `images`, group by group: each group of `group`
    images gets its own K random timesteps, so the group means are independent estimates and their standard
    error covers the choice of timesteps as well as the noise and the images. Group g's draws come from seed
    1000 + g, so two models (or a conditional model with and without `class_labels`, one per image) see the same
    timesteps and noise, and their group means pair up."""
    group_means, start = [], time.perf_counter()
    for g, first in enumerate(range(0, len(images), group)):
        bits = pipe.elbo(
            images[first : first + group].to(pipe.device),
            generator=torch.Generator().manual_seed(1000 + g),
            batch_size=batch_size,
            num_timesteps=timesteps,
            class_labels=None if class_labels is None else class_labels[first : first + group],
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


def exact_bound(args: argparse.Namespace, run: str, shard: int) -> dict:
    """The exact bound, all T terms, of test images [shard * S, (shard + 1) * S) for S = --shard-images.

    The noise of shard k comes from seed k in every run, so the runs see the same x_t for the same image and
    timestep and their per-image differences pair up."""
    pipe = load_pipeline(args, run)
    first = shard * args.shard_images
    images = test_images(first + args.shard_images)[first:]
    start = time.perf_counter()
    output = pipe.elbo(images, generator=torch.Generator().manual_seed(shard), batch_size=args.eval_batch_size)
    return {
        "first_image": first,
        "bits_per_dim": output.bits_per_dim.tolist(),
        "prior": output.prior.tolist(),
        "reconstruction": output.reconstruction.tolist(),
        "denoising": output.denoising.sum(-1).tolist(),
        "denoising_terms_sum": output.denoising.sum(0).tolist(),  # L_1..L_T-1 summed over the shard's images
        "seconds": time.perf_counter() - start,
    }


def sample_grid(args: argparse.Namespace, run: str, steps: int) -> dict:
    """A 10x10 grid of the same 100 seeds (so grids at different step counts compare) after `steps` steps."""
    pipe, start = load_pipeline(args, run), time.perf_counter()
    images = pipe(
        batch_size=100, generator=torch.Generator().manual_seed(0), num_inference_steps=steps, output_type="pt"
    ).images
    seconds = time.perf_counter() - start
    name = f"fashion_mnist_{steps}steps.png" if run == MAIN_RUN else f"fashion_mnist_{run}_{steps}steps.png"
    path = args.grid_dir / name
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


def job_environment(code: Path, threads: int) -> dict[str, str]:
    """The environment of a job subprocess: `threads` OpenMP/MKL threads, and `code`/src first on PYTHONPATH."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code / "src"), env.get("PYTHONPATH")]))
    return env


def run_lane(args: argparse.Namespace, queue: list[str], lock: threading.Lock, failures: list[str]) -> None:
    """Take the next job from the shared queue until it is empty; a job that needs a training still running in
    another lane waits for it."""
    env = job_environment(args.code, args.threads)
    while True:
        with lock:
            if not queue:
                return
            job = queue.pop(0)
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
            with lock:
                failures.append(job)
                if job.startswith("train:"):  # the jobs of that run would wait for it forever
                    run = job.split(":")[1]
                    queue[:] = [other for other in queue if other.split(":")[1] != run]


def exact_shards(args: argparse.Namespace) -> range:
    return range(-(-args.eval_images // args.shard_images))


def job_queue(args: argparse.Namespace) -> list[str]:
    """Every job, in the order the lanes take them, so that a run stopped early has the most telling results:
    the trainings, every run's estimate and the grids (cheap); then the exact bounds shard by shard across the
    main run, the improved-DDPM runs and the weighting runs, so that their partial bounds always cover the same
    images and pair up, since they differ from the main run by tenths of a bit/dim, which the exact bound has to
    settle; and last that of sample prediction, whose 100x gap the estimate already shows."""
    shards = [] if args.skip_exact else exact_shards(args)
    runs = [run for run in RUNS if run in args.runs]
    improved = [run for run in runs if run in IMPROVED_RUNS]
    weighting_runs = [run for run in runs if run not in (MAIN_RUN, *improved) and RUNS[run][0] == "epsilon"]
    other_runs = [run for run in runs if run not in (MAIN_RUN, *improved, *weighting_runs)]
    paired_runs = [run for run in (MAIN_RUN, *improved, *weighting_runs) if run in runs]
    return (
        [f"train:{run}" for run in runs]
        + [f"estimate:{run}" for run in runs]
        + [f"grid:{run}:{steps}" for steps in sorted(args.grid_steps) for run in runs if run in (MAIN_RUN, *improved)]
        + [f"exact:{run}:{shard}" for shard in shards for run in paired_runs]
        + [f"exact:{run}:{shard}" for shard in shards for run in other_runs]
    )


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def exact_result(args: argparse.Namespace, run: str, first_images: list[int] | None = None) -> dict | None:
    """The exact-bound shards of `run` that exist (those that start at `first_images`, when given), joined:
    per-image lists in image order."""
    shards = [read_json(result_path(args, f"exact:{run}:{shard}")) for shard in exact_shards(args)]
    done = sorted((shard for shard in shards if shard), key=lambda shard: shard["first_image"])
    if first_images is not None:
        done = [shard for shard in done if shard["first_image"] in first_images]
    if not done:
        return None
    joined = {key: [v for shard in done for v in shard[key]] for key in ("bits_per_dim", "prior", "reconstruction")}
    joined["first_images"] = [shard["first_image"] for shard in done]
    joined["terms"] = np.sum([shard["denoising_terms_sum"] for shard in done], axis=0) / len(joined["bits_per_dim"])
    joined["seconds"] = sum(shard["seconds"] for shard in done)
    joined["complete"] = len(done) == len(shards)
    return joined


def mean_and_error(values: list[float], sign: str = "", digits: int = 3) -> str:
    mean, error = statistics.fmean(values), statistics.stdev(values) / len(values) ** 0.5
    return f"{mean:{sign}.{digits}f} +- {error:.{digits}f}"


def print_table(args: argparse.Namespace) -> None:
    print(f"Fashion-MNIST, {args.preset} UNet, {args.steps} steps x {args.batch_size} images")
    print(
        f"exact: the full negative ELBO (prior + L_0 + all of L_1..L_T-1) of each of the first {args.eval_images} "
        "test images, mean +- standard error over the images;\n"
        "paired: the image-by-image difference to the main run (the same images and noise);\n"
        f"estimate: the images in groups of {args.eval_group}, K = {args.eval_timesteps} stratified random "
        "timesteps per group (+ L_0), mean +- standard error of the group means; its paired difference is\n"
        "taken group by group (the same images, timesteps and noise)\n"
    )
    header = f"{'run':16} {'prediction':>10} {'weighting':>9} {'images seen':>11} {'train s':>7}"
    print("learned-hybrid: learned_range variance, simple + 0.001 L_vlb; learned-vlb-is: learned_range, L_vlb alone,")
    print("--timestep_sampling importance; learned-vlb: the same with uniform timesteps (the weighting column applies")
    print("to the MSE only)\n")
    columns = (
        f" {'images':>6} {'bits/dim (exact)':>18} {'minus main, paired':>19} {'bits/dim (estimate)':>20}"
        f" {'minus main, paired':>19}"
    )
    print(header + columns)
    print("-" * len(header + columns))
    main = exact_result(args, MAIN_RUN)
    main_estimate = read_json(result_path(args, f"estimate:{MAIN_RUN}"))
    exact_results = {}
    for run, (prediction_type, weighting) in RUNS.items():
        if run not in args.runs:
            continue
        metrics = read_json(args.work / run / "metrics.json")
        exact = exact_results[run] = exact_result(args, run)
        estimate = read_json(result_path(args, f"estimate:{run}"))
        seen = f"{metrics['images_seen']:,}" if metrics else "-"
        wall = f"{metrics['wall_time_s']:.0f}" if metrics else "-"
        images = f"{len(exact['bits_per_dim']):,}" if exact else "0"
        bound = mean_and_error(exact["bits_per_dim"]) if exact else "not run"
        paired = "-"
        if exact and main and run != MAIN_RUN:
            # Each shard has the same images and noise in every run, so the differences pair up image by image.
            main_bits = dict(zip(image_numbers(main), main["bits_per_dim"], strict=True))
            differences = [
                bits - main_bits[i]
                for i, bits in zip(image_numbers(exact), exact["bits_per_dim"], strict=True)
                if i in main_bits
            ]
            paired = mean_and_error(differences, "+") if len(differences) > 1 else "-"
        estimated = f"{estimate['bits_per_dim']:.3f} +- {estimate['standard_error']:.3f}" if estimate else "not run"
        estimate_paired = "-"
        if estimate and main_estimate and run != MAIN_RUN:
            # Each group has the same images, timesteps and noise in every run, so group means pair up.
            pairs = zip(estimate["group_means"], main_estimate["group_means"], strict=True)
            estimate_paired = mean_and_error([a - b for a, b in pairs], "+")
        print(
            f"{run:16} {prediction_type:>10} {weighting:>9} {seen:>11} {wall:>7} {images:>6} {bound:>18} "
            f"{paired:>19} {estimated:>20} {estimate_paired:>19}"
        )
    importance, uniform = (
        read_json(result_path(args, f"estimate:{name}")) for name in ("learned-vlb-is", "learned-vlb")
    )
    if importance and uniform:
        # The two runs differ only in how t is drawn; the same groups pair up as above.
        pairs = zip(importance["group_means"], uniform["group_means"], strict=True)
        metrics = read_json(args.work / "learned-vlb-is" / "metrics.json")
        warmed_up = metrics["training"].get("importance_sampling_warmed_up") if metrics else None
        print(
            f"\nimportance minus uniform timesteps (learned-vlb-is - learned-vlb), estimate, paired: "
            f"{mean_and_error([a - b for a, b in pairs], '+')}; the importance sampler left its warm-up: {warmed_up}"
        )

    print("\nwhere the exact bound lies, bits/dim (mean over the images; the L_t in Ho et al.'s numbering):")
    print(
        f"{'run':22} {'images':>6} {'prior':>7} {'L_0':>7} {'L_1..9':>7} {'L_10..99':>8} {'L_100..999':>10} "
        f"{'core-s/image':>12}"
    )

    def breakdown(name: str, exact: dict) -> None:
        terms = exact["terms"]
        print(
            f"{name:22} {len(exact['bits_per_dim']):6} {statistics.fmean(exact['prior']):7.4f} "
            f"{statistics.fmean(exact['reconstruction']):7.3f} {terms[:9].sum():7.3f} {terms[9:99].sum():8.3f} "
            f"{terms[99:].sum():10.3f} {exact['seconds'] / len(exact['bits_per_dim']):12.1f}"
        )

    for run, exact in exact_results.items():
        if exact:
            breakdown(run, exact)
            if not exact["complete"] and main and run != MAIN_RUN:  # the main run on the same images, to compare
                breakdown(f"  {MAIN_RUN}, same", exact_result(args, MAIN_RUN, exact["first_images"]))
    for run in [run for run in (MAIN_RUN, *IMPROVED_RUNS) if run in args.runs]:
        grids = [read_json(result_path(args, f"grid:{run}:{steps}")) for steps in args.grid_steps]
        times = ", ".join(f"{grid['steps']} steps {grid['seconds']:.0f} s" for grid in grids if grid)
        print(
            f"{'' if run != MAIN_RUN else chr(10)}sample grids of {run} (100 images, one batch): {times or 'not run'}"
        )


def image_numbers(exact: dict) -> list[int]:
    """The test-image index of each entry of an exact_result's per-image lists."""
    numbers, total = [], len(exact["bits_per_dim"])
    for k, first in enumerate(exact["first_images"]):
        stop = exact["first_images"][k + 1] if k + 1 < len(exact["first_images"]) else None
        count = (stop - first) if stop is not None else total - len(numbers)
        numbers.extend(range(first, first + count))
    return numbers


def main() -> None:
    args = parse_args()
    if args.job:
        run_job_here(args)
        return
    if not args.table:
        if not DATASET.is_dir():
            sys.exit(f"No dataset at {DATASET}: run `python benchmarks/fashion_mnist.py` first.")
        failures: list[str] = []
        queue, lock = job_queue(args), threading.Lock()
        threads = [threading.Thread(target=run_lane, args=(args, queue, lock, failures)) for _ in range(args.lanes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            print(f"failed: {', '.join(failures)} (see {args.work / 'logs'})", flush=True)
    print_table(args)


if __name__ == "__main__":
    main()
