"""Class-conditional DDPM with classifier-free guidance on Fashion-MNIST (issue 13), against the unconditional model.

    python benchmarks/fashion_mnist.py                      # once: the dataset folder
    python benchmarks/bench_classes.py --lane 0/2 &         # two lanes, one per core; each resumes where it stopped
    python benchmarks/bench_classes.py --lane 1/2
    python benchmarks/bench_classes.py --table              # the tables and grids again, from the results on disk

The conditional model is bench_quality.py's main run (its command: `tiny` UNet, 600 steps x 32 images, lr 1e-3,
50 warmup steps, cosine, EMA, seed 0) with `--class_column label` (label dropout 0.1), `--mixed_precision no` and
`--no-fused_adamw`, as the unconditional model it is compared with trained (--unconditional: bench_quality.py's main
run, trained by its command when missing; float32, from before train.py's bf16 and fused-AdamW defaults).

Measured:
- Held-out bits/dim, the stratified estimate (`elbo(num_timesteps=K)`) of bench_quality.py (`grouped_bound`): the
  first --eval-images test images in groups with their own K timesteps and noise, the same for every row, so the
  rows' group means pair up. Rows: the unconditional model (-log p(x)); the conditional model given each image's
  true label (-log p(x | y)); the conditional model through its no-label token (-log p(x)).
- Samples: --num-samples per guidance scale w, image i of class i % 10 from seed i (so the scales start from the
  same x_T and the classes are balanced), --sampling-steps respaced DDPM steps (eta 1), in jobs of --chunk images
  kept as 8-bit pixels. Of them: the Frechet distance to the 10,000 test images in the features of bench_fid.py's
  classifier, beside the unconditional model's at the same sampler, steps and count (bench_fid.py's result, measured
  by its `measure` when missing); and the classifier's accuracy on them, the fraction classified as the label they
  were sampled for, in all and per class.
- Grids benchmarks/fashion_mnist_classes_w<w>.png at w = 0 and the best scale: one row per class (T-shirt/top ...
  Ankle boot, top to bottom), the first 10 samples of each class.

The best scale is the one with the highest accuracy among those whose FD is no worse than the unconditional model's
(without such a scale, the one with the lowest FD). Every job writes its result under benchmarks/_work/classes and is
skipped when that exists; lane K of N takes jobs K, K + N, ... of one fixed list, and a job that needs the
conditional model waits for lane 0 to train it.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from simple_ddpm import SimpleDDPMPipeline
from simple_ddpm.feature_networks import ClassifierFeatures
from simple_ddpm.frechet import FeatureStatistics, frechet_distance
from simple_ddpm.image_processing import image_grid
from simple_ddpm.sample_quality import pixel_statistics
from simple_ddpm.sampling import generate_images, use_sampler

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

import bench_fid  # noqa: E402
import bench_quality  # noqa: E402
from fashion_mnist import LABELS  # noqa: E402

WORK = BENCHMARKS / "_work" / "classes"
NUM_CLASSES = len(LABELS)
BOUNDS = ("unconditional", "conditional", "conditional-null")
FAILED = "train.failed"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[0.0, 1.0, 3.0], help="w (0 1 3)")
    parser.add_argument("--num-samples", type=int, default=500, help="samples per scale, a multiple of 10 (500)")
    parser.add_argument("--chunk", type=int, default=100, help="samples per job, a multiple of 10 (100)")
    parser.add_argument("--sampling-steps", type=int, default=100, help="respaced DDPM steps (default 100)")
    parser.add_argument("--eval-images", type=int, default=1000, help="test images of the bound (default 1000)")
    parser.add_argument("--eval-group", type=int, default=20, help="images per group of the estimate (default 20)")
    parser.add_argument("--eval-timesteps", type=int, default=16, help="K of the estimate (default 16)")
    parser.add_argument("--eval-batch-size", type=int, default=100, help="(image, t) pairs per UNet call (100)")
    parser.add_argument("--lane", default="0/1", help="K/N: run jobs K, K + N, ... (default 0/1: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this lane (default 1)")
    parser.add_argument("--code", type=Path, default=bench_quality.REPO, help="train.py of DIR (see bench_quality)")
    parser.add_argument("--work", type=Path, default=WORK, help=f"results and the model (default {WORK})")
    parser.add_argument(
        "--unconditional",
        type=Path,
        default=bench_quality.WORK / bench_quality.MAIN_RUN,
        help="the unconditional model (default: bench_quality.py's main run)",
    )
    parser.add_argument("--fid-work", type=Path, default=bench_fid.WORK, help="bench_fid.py's classifier and results")
    parser.add_argument("--grid-dir", type=Path, default=BENCHMARKS, help="where the per-class grids go")
    parser.add_argument("--table", action="store_true", help="only the tables and grids, from the results on disk")
    args = parser.parse_args(argv)
    if args.num_samples % NUM_CLASSES or args.chunk % NUM_CLASSES or args.num_samples < 2 or args.chunk < 1:
        parser.error(f"--num-samples and --chunk must be positive multiples of {NUM_CLASSES} (balanced classes).")
    if any(w < 0 for w in args.guidance_scales):
        parser.error("--guidance-scales must be >= 0 (0: the conditional model without guidance).")
    lane, _, lanes = args.lane.partition("/")
    if not (lane.isdigit() and lanes.isdigit() and int(lane) < int(lanes)):
        parser.error(f"--lane must be K/N with 0 <= K < N, got {args.lane!r}.")
    args.lane, args.lanes = int(lane), int(lanes)
    return args


def conditional_dir(args: argparse.Namespace) -> Path:
    return args.work / "conditional"


def train_conditional(args: argparse.Namespace) -> None:
    """bench_quality.py's main-run command with labels; float32 and the foreach AdamW, as the unconditional main run
    trained (before train.py's bf16 autocast and fused AdamW defaults)."""
    quality_args = bench_quality.parse_args(["--code", str(args.code)])
    command = bench_quality.train_command(quality_args, bench_quality.MAIN_RUN) + [
        "--class_column=label",
        "--class_dropout=0.1",
        "--mixed_precision=no",
        "--no-fused_adamw",  # the main run predates both defaults
        f"--output_dir={conditional_dir(args)}",  # the last --output_dir wins
    ]
    env = bench_quality.job_environment(args.code, args.threads)
    log = args.work / "logs" / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        status = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if status != 0:
        (args.work / FAILED).write_text(f"exit status {status}, see {log}\n")
        sys.exit(f"training failed with exit status {status}; see {log}")


def wait_for_conditional(args: argparse.Namespace) -> None:
    while not (conditional_dir(args) / "metrics.json").is_file():
        if (args.work / FAILED).is_file():
            sys.exit(f"the conditional model's training failed: {(args.work / FAILED).read_text().strip()}")
        time.sleep(10)


def load_pipeline(path: Path) -> SimpleDDPMPipeline:
    pipe = SimpleDDPMPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def result_path(args: argparse.Namespace, job: str) -> Path:
    return args.work / "results" / f"{job.replace(':', '-')}.json"


def samples_path(args: argparse.Namespace, scale: float, first: int) -> Path:
    return args.work / "samples" / f"w{scale:g}-{args.sampling_steps}steps-{first}.npz"


def bound(args: argparse.Namespace, which: str) -> None:
    """The stratified estimate of the first --eval-images test images (bench_quality's groups, seeds and K)."""
    pipe = load_pipeline(args.unconditional if which == "unconditional" else conditional_dir(args))
    images = bench_quality.test_images(args.eval_images)
    labels = bench_fid.fashion_mnist_pixels("test")[1][: args.eval_images] if which == "conditional" else None
    result = bench_quality.grouped_bound(
        pipe, images, args.eval_group, args.eval_timesteps, args.eval_batch_size, class_labels=labels
    )
    write_json(result_path(args, f"bound:{which}"), result)
    print(f"bound {which}: {result['bits_per_dim']:.4f} +- {result['standard_error']:.4f}", flush=True)


def sample_chunk(args: argparse.Namespace, scale: float, first: int) -> None:
    """Samples first .. first + --chunk - 1 at guidance scale `scale`: image i of class i % 10, from seed i."""
    pipe = load_pipeline(conditional_dir(args))
    eta = use_sampler(pipe, "ddpm")
    count = min(args.chunk, args.num_samples - first)
    labels = [i % NUM_CLASSES for i in range(first, first + count)]
    start = time.perf_counter()
    images = generate_images(
        pipe,
        count,
        batch_size=count,
        seed=first,
        num_inference_steps=args.sampling_steps,
        eta=eta,
        progress=False,
        class_labels=labels,
        guidance_scale=scale,
    )
    seconds = time.perf_counter() - start
    pixels = (images * 255).round().to(torch.uint8).numpy()  # 8 bits, as a saved PNG holds them
    path = samples_path(args, scale, first)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, pixels=pixels, labels=np.array(labels), seconds=seconds)
    partial.replace(path)
    print(f"w={scale:g} samples {first}..{first + count - 1}: {seconds:.0f} s", flush=True)


def unconditional_fd(args: argparse.Namespace) -> dict:
    """bench_fid.py's DDPM row of the unconditional model at the same steps and count, measured when missing."""
    fid_args = bench_fid.parse_args(
        ["--num-samples", str(args.num_samples), "--work", str(args.fid_work), "--model", str(args.unconditional)]
    )
    config = f"ddpm:{args.sampling_steps}"
    path = bench_fid.result_path(fid_args, config)
    if not path.is_file():
        extractor = ClassifierFeatures(args.fid_work / "classifier.safetensors")
        bench_fid.measure(fid_args, config, extractor, bench_fid.test_statistics(fid_args, extractor))
    return json.loads(path.read_text())


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def job_list(args: argparse.Namespace) -> list[str]:
    """Every job in a fixed order that the lanes split: the training first (lane 0), then the bounds, the sample
    chunks by chunk across the scales (so a stopped run has every scale in part), the unconditional FD last."""
    chunks = range(0, args.num_samples, args.chunk)
    samples = [f"samples:{scale:g}:{first}" for first in chunks for scale in args.guidance_scales]
    return ["train", *(f"bound:{which}" for which in BOUNDS), *samples, "unconditional-fd"]


def job_done(args: argparse.Namespace, job: str) -> bool:
    kind, *options = job.split(":")
    if kind == "train":
        return (conditional_dir(args) / "metrics.json").is_file()
    if kind == "samples":
        return samples_path(args, float(options[0]), int(options[1])).is_file()
    if kind == "unconditional-fd":
        fid_args = bench_fid.parse_args(["--num-samples", str(args.num_samples), "--work", str(args.fid_work)])
        return bench_fid.result_path(fid_args, f"ddpm:{args.sampling_steps}").is_file()
    return result_path(args, job).is_file()


def run_job(args: argparse.Namespace, job: str) -> None:
    kind, *options = job.split(":")
    if kind == "train":
        train_conditional(args)
        return
    torch.manual_seed(0)
    if kind == "unconditional-fd":
        unconditional_fd(args)
        return
    if kind == "bound" and options[0] == "unconditional":
        bound(args, "unconditional")
        return
    wait_for_conditional(args)
    if kind == "bound":
        bound(args, options[0])
    else:
        sample_chunk(args, float(options[0]), int(options[1]))


def run_lane(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    for job in job_list(args)[args.lane :: args.lanes]:
        if job_done(args, job):
            continue
        print(f"{time.strftime('%H:%M:%S')} start {job}", flush=True)
        start = time.perf_counter()
        run_job(args, job)
        print(f"{time.strftime('%H:%M:%S')} end {job}: {time.perf_counter() - start:.0f} s", flush=True)


def load_samples(args: argparse.Namespace, scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    """All sample chunks of `scale` (pixels, labels), or None when any is missing."""
    paths = [samples_path(args, scale, first) for first in range(0, args.num_samples, args.chunk)]
    if not all(path.is_file() for path in paths):
        return None
    chunks = [np.load(path) for path in paths]
    pixels = np.concatenate([chunk["pixels"] for chunk in chunks])
    labels = np.concatenate([chunk["labels"] for chunk in chunks])
    return pixels, labels


def sample_scores(args: argparse.Namespace, extractor: ClassifierFeatures, test: FeatureStatistics) -> dict:
    """Per scale with all its samples: FD to the test set, the classifier's accuracy on them, in all and by class."""
    scores = {}
    for scale in args.guidance_scales:
        loaded = load_samples(args, scale)
        if loaded is None:
            continue
        pixels, labels = loaded
        pixels = torch.from_numpy(pixels)
        sample_statistics = pixel_statistics(extractor, pixels, batch_size=500, progress=False)
        with torch.no_grad():
            predicted = extractor.model(pixels.float() / 255).argmax(1).numpy()
        correct = predicted == labels
        scores[scale] = {
            "fd": frechet_distance(sample_statistics, test),
            "accuracy": float(correct.mean()),
            "class_accuracy": [float(correct[labels == c].mean()) for c in range(NUM_CLASSES)],
            "pixels": pixels,
        }
    return scores


def best_scale(scores: dict, unconditional: float) -> float | None:
    """The scale of the highest accuracy among those whose FD is no worse than the unconditional model's; without
    one, the scale of the lowest FD."""
    if not scores:
        return None
    fair = [w for w in scores if scores[w]["fd"] <= unconditional]
    if fair:
        return max(fair, key=lambda w: scores[w]["accuracy"])
    return min(scores, key=lambda w: scores[w]["fd"])


def write_grid(args: argparse.Namespace, scale: float, pixels: torch.Tensor) -> Path:
    """One row per class: the first 10 samples of each (samples c, c + 10, ..., c + 90 are of class c)."""
    rows = torch.stack([pixels[c : c + 10 * NUM_CLASSES : NUM_CLASSES] for c in range(NUM_CLASSES)])
    path = args.grid_dir / f"fashion_mnist_classes_w{scale:g}.png"
    image_grid(rows.flatten(0, 1).float() / 255, cell_size=bench_quality.GRID_CELL, cols=10).save(path, optimize=True)
    return path


def print_bounds(args: argparse.Namespace) -> None:
    results = {which: bench_quality.read_json(result_path(args, f"bound:{which}")) for which in BOUNDS}
    print(
        f"Fashion-MNIST, tiny UNet, 600 steps x 32 images, float32, seed 0; held-out bits/dim of the first "
        f"{args.eval_images} test images"
    )
    print(
        f"estimate: groups of {args.eval_group} images, K = {args.eval_timesteps} stratified timesteps per group "
        "(+ L_0 and the prior), mean +- standard error of the group means;"
    )
    print("paired: group by group, the same images, timesteps and noise in every row\n")
    rows = {
        "unconditional": ("unconditional main run", "-log p(x)"),
        "conditional": ("conditional, true label", r"-log p(x \| y)"),
        "conditional-null": ("conditional, no-label token", "-log p(x)"),
    }
    print("| model | bound on | bits/dim | minus unconditional, paired | minus no-label token, paired |")
    print("|---|---|---|---|---|")
    for which, (name, what) in rows.items():
        result = results[which]
        if result is None:
            print(f"| {name} | {what} | not run | | |")
            continue
        paired = []
        for other in ("unconditional", "conditional-null"):
            base = results[other]
            if base is None or other == which:
                paired.append("-")
                continue
            pairs = zip(result["group_means"], base["group_means"], strict=True)
            paired.append(bench_quality.mean_and_error([a - b for a, b in pairs], "+", digits=4))
        bits = f"{result['bits_per_dim']:.4f} +- {result['standard_error']:.4f}"
        print(f"| {name} | {what} | {bits} | {paired[0]} | {paired[1]} |")


def print_samples(args: argparse.Namespace) -> None:
    classifier = json.loads((args.fid_work / "classifier.json").read_text())
    extractor = ClassifierFeatures(args.fid_work / "classifier.safetensors")
    fid_args = bench_fid.parse_args(["--num-samples", str(args.num_samples), "--work", str(args.fid_work)])
    test = bench_fid.test_statistics(fid_args, extractor)
    unconditional_path = bench_fid.result_path(fid_args, f"ddpm:{args.sampling_steps}")
    unconditional = bench_quality.read_json(unconditional_path)
    scores = sample_scores(args, extractor, test)
    print(
        f"\nSamples: {args.num_samples} per row ({args.num_samples // NUM_CLASSES} per class), image i of class "
        f"i % 10 from seed i, {args.sampling_steps} respaced DDPM steps; FD to the 10,000 test images in the "
        f"features of bench_fid's classifier (test accuracy {classifier['test_accuracy']:.3f}); accuracy: the "
        "fraction of samples the classifier assigns to the class they were sampled for\n"
    )
    # Wall times on a shared machine are in the result files, not comparable between rows.
    print("| model | guidance w | UNet calls per image (images x steps) | FD | classifier accuracy |")
    print("|---|---|---|---|---|")
    if unconditional:
        print(f"| unconditional main run | - | {args.sampling_steps} | {unconditional['fd']:.1f} | - |")
    for scale in args.guidance_scales:
        calls = args.sampling_steps * (1 if scale == 0 else 2)
        if scale not in scores:
            print(f"| conditional | {scale:g} | {calls} | not run | not run |")
            continue
        print(f"| conditional | {scale:g} | {calls} | {scores[scale]['fd']:.1f} | {scores[scale]['accuracy']:.3f} |")
    print(f"| reference: the 10,000 test images | | | 0 | {classifier['test_accuracy']:.3f} |")
    if not scores:
        return
    test_pixels, test_labels = bench_fid.fashion_mnist_pixels("test")
    with torch.no_grad():
        test_correct = torch.cat([extractor.model(chunk.float() / 255).argmax(1) for chunk in test_pixels.split(1000)])
    test_correct = (test_correct == test_labels).numpy()
    print("\nclassifier accuracy per class, on the samples of each scale and on the test images\n")
    print("| class | " + " | ".join(f"w = {w:g}" for w in scores) + " | test images |")
    print("|---|" + "---|" * (len(scores) + 1))
    for c, name in enumerate(LABELS):
        test_accuracy = test_correct[test_labels.numpy() == c].mean()
        accuracies = " | ".join(f"{scores[w]['class_accuracy'][c]:.2f}" for w in scores)
        print(f"| {name} | {accuracies} | {test_accuracy:.2f} |")
    best = best_scale(scores, unconditional["fd"] if unconditional else float("inf"))
    for scale in sorted({min(scores), best}):  # unguided (w = 0 when measured) and the best scale
        path = write_grid(args, scale, scores[scale]["pixels"])
        print(f"\ngrid w = {scale:g}: {path}", end="")
    print(f"\n\nbest scale: w = {best:g} (accuracy {scores[best]['accuracy']:.3f}, FD {scores[best]['fd']:.1f})")
    if unconditional:
        met = scores[best]["accuracy"] >= 0.9 and scores[best]["fd"] <= unconditional["fd"]
        target = f"accuracy >= 0.90 and FD <= the unconditional {unconditional['fd']:.1f}"
        print(f"target ({target}): {'met' if met else 'MISSED'}")


def main() -> None:
    args = parse_args()
    if not args.table:
        if not bench_quality.DATASET.is_dir():
            sys.exit(f"No dataset at {bench_quality.DATASET}: run `python benchmarks/fashion_mnist.py` first.")
        prerequisites = [args.fid_work / "classifier.json", args.unconditional / "metrics.json"]
        if args.lane == 0:  # bench_fid's classifier and bench_quality's main run, each trained once, seeded
            bench_fid.train_classifier(bench_fid.parse_args(["--work", str(args.fid_work)]))
            bench_fid.train_model(bench_fid.parse_args(["--model", str(args.unconditional)]))
        while not all(path.is_file() for path in prerequisites):
            time.sleep(10)
        run_lane(args)
    print_bounds(args)
    print_samples(args)


if __name__ == "__main__":
    main()
