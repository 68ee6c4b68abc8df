"""Frechet distance against sampling steps on Fashion-MNIST: DDPM, DDIM and DPM-Solver++ on one trained model.

    python benchmarks/fashion_mnist.py     # once: the IDX files to benchmarks/_work/fashion_mnist
    python benchmarks/bench_fid.py         # trains what is missing, samples, prints the table, draws the plot
    python benchmarks/bench_fid.py --table # the table and plot again, from the results on disk

The feature network is a `FeatureClassifier` trained here on the 60,000 training images (seeded; its test accuracy
is printed), saved as benchmarks/_work/fid/classifier.safetensors; its 128-unit penultimate layer gives the
features. The model is bench_quality.py's main run (epsilon prediction, simple loss, `tiny` UNet, 600 steps of
32 images), trained by the same command when missing. Each sampler configuration draws --num-samples images
(image i from seed i, so every configuration starts from the same x_T) and is compared with the statistics of
the 10,000 test images. Reference rows put the scale in view: --num-samples training images (the floor that
finite samples leave), the same images blurred, and uniform noise.

Samplers: "ddpm" is SimpleDDPMScheduler's ancestral step on the exactly respaced chain (DDIM with eta = 1 is
the same step), "ddim" its eta = 0 step (Song et al. 2021 eq. 12), "diffusers-ddim" diffusers' DDIMScheduler
swapped in from the config (eta = 0), which steps from t to t - T // n whatever the spacing, and "dpm++"
diffusers' DPMSolverMultistepScheduler (2nd order, DPM-Solver++); "diffusers-ddim-clipped", diffusers' DDIM with
use_clipped_model_output=True, is a diagnosis (see DEFAULT_CONFIGS). Every configuration writes its result under
benchmarks/_work/fid/results and is skipped when that exists, so a stopped run resumes.

Training recipes: every bench_quality.py run (--runs; trained by bench_quality's command when missing) is also
sampled at --run-steps DDPM steps (100) from the same seeds, and its FD printed beside its bits/dim from
bench_quality's results, so that each recipe is judged by its samples as well as by its likelihood.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from PIL import Image, ImageFilter

from simple_ddpm import SimpleDDPMPipeline
from simple_ddpm.feature_networks import ClassifierFeatures, FeatureClassifier, save_feature_classifier
from simple_ddpm.frechet import FeatureStatistics, frechet_distance
from simple_ddpm.image_processing import image_grid
from simple_ddpm.sample_quality import pixel_statistics, sample_statistics
from simple_ddpm.sampling import use_sampler

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

import bench_quality  # noqa: E402
from plotting import line_plot  # noqa: E402

WORK = BENCHMARKS / "_work" / "fid"
SAMPLERS = ("ddpm", "ddim", "diffusers-ddim", "dpm++", "diffusers-ddim-clipped")
PLOTTED = SAMPLERS[:4]  # the clipped-eps DDIM is a diagnosis, in the table only
SPACINGS = ("linspace", "leading", "trailing")
DEFAULT_CONFIGS = [f"ddpm:{n}" for n in (1000, 250, 100, 50, 25)] + [
    f"{sampler}:{n}" for sampler in ("ddim", "diffusers-ddim", "dpm++") for n in (50, 25, 10)
]
# Why diffusers' DDIM falls behind ours: with trailing spacing (999, 959, ..., 39 at 25 steps) its step to
# t - T // n is the schedule's next timestep, so the two differ only in the eps_hat they keep beside a clipped x0_hat.
# diffusers-ddim-clipped is diffusers' DDIM with use_clipped_model_output=True (eps_hat re-derived from the clipped
# x0_hat, as ours does): at 25 trailing steps it must equal ours, and at 25 linspace steps it has the previous-
# timestep offset alone.
DEFAULT_CONFIGS += [
    "ddim:25:trailing",
    "diffusers-ddim:25:trailing",
    "diffusers-ddim-clipped:25:trailing",
    "diffusers-ddim-clipped:25",
]


class ClippedEpsDDIMScheduler(DDIMScheduler):
    """diffusers' DDIMScheduler whose step defaults to use_clipped_model_output=True."""

    def step(
        self,
        model_output,
        timestep,
        sample,
        eta=0.0,
        use_clipped_model_output=True,
        generator=None,
        variance_noise=None,
        return_dict=True,
    ):
        return super().step(
            model_output, timestep, sample, eta, use_clipped_model_output, generator, variance_noise, return_dict
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per configuration (default 1000)")
    parser.add_argument(
        "--configs",
        nargs="*",
        default=DEFAULT_CONFIGS,
        help="SAMPLER:STEPS[:SPACING] (the model's timestep_spacing unless given), SAMPLER of " + ", ".join(SAMPLERS),
    )
    parser.add_argument("--batch-size", type=int, default=250, help="images per network call (default 250)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--classifier-epochs", type=int, default=2, help="epochs of the feature classifier (default 2)"
    )
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--model", type=Path, default=bench_quality.WORK / bench_quality.MAIN_RUN)
    parser.add_argument(
        "--runs",
        nargs="*",
        choices=list(bench_quality.RUNS),
        default=bench_quality.DEFAULT_RUNS,
        help="bench_quality.py runs sampled at --run-steps DDPM steps (default: its default runs; none: skip)",
    )
    parser.add_argument("--run-steps", type=int, default=100, help="DDPM steps of the runs' samples (default 100)")
    parser.add_argument("--plot", type=Path, default=BENCHMARKS / "fid_vs_steps.png")
    parser.add_argument("--grid", type=Path, default=BENCHMARKS / "fid_samplers_25steps.png")
    parser.add_argument("--table", action="store_true", help="only the table and plot, from the results on disk")
    return parser.parse_args(argv)


def fashion_mnist_pixels(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 pixels (N, 1, 28, 28) and labels of a split of the datasets folder fashion_mnist.py writes."""
    import datasets

    data = datasets.load_from_disk(str(bench_quality.DATASET))[split].with_format("numpy")
    return torch.from_numpy(np.asarray(data["image"]))[:, None], torch.from_numpy(np.asarray(data["label"]))


def train_classifier(args: argparse.Namespace) -> dict:
    """The feature network: a FeatureClassifier fit to the training labels (Adam, seeded), and its test accuracy."""
    path, info = args.work / "classifier.safetensors", args.work / "classifier.json"
    if path.is_file() and info.is_file():
        return json.loads(info.read_text())
    train_pixels, train_labels = fashion_mnist_pixels("train")
    test_pixels, test_labels = fashion_mnist_pixels("test")
    torch.manual_seed(0)
    model = FeatureClassifier(in_channels=1, image_size=28, num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    for _ in range(args.classifier_epochs):
        for batch in torch.randperm(len(train_pixels)).split(128):
            loss = torch.nn.functional.cross_entropy(model(train_pixels[batch].float() / 255), train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(chunk.float() / 255).argmax(1) for chunk in test_pixels.split(1000)])
    result = {
        "test_accuracy": (predictions == test_labels).float().mean().item(),
        "epochs": args.classifier_epochs,
        "seconds": time.perf_counter() - start,
    }
    args.work.mkdir(parents=True, exist_ok=True)
    save_feature_classifier(model, path)
    info.write_text(json.dumps(result, indent=2))
    return result


def train_model(args: argparse.Namespace, run: str = bench_quality.MAIN_RUN) -> None:
    """A bench_quality.py run (its main run by default), by bench_quality's own command, when it is not on disk."""
    quality_args = bench_quality.parse_args([])
    if (quality_args.work / run / "metrics.json").is_file():
        return
    env = bench_quality.job_environment(quality_args.code, args.threads)
    subprocess.run(bench_quality.train_command(quality_args, run), env=env, check=True)


def result_path(args: argparse.Namespace, name: str) -> Path:
    return args.work / "results" / f"{name.replace(':', '-')}-{args.num_samples}.json"


def save_result(args: argparse.Namespace, name: str, result: dict) -> dict:
    path = result_path(args, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def test_statistics(args: argparse.Namespace, extractor: ClassifierFeatures) -> FeatureStatistics:
    cache = args.work / "test_statistics.npz"
    if cache.is_file():
        return FeatureStatistics.load(cache)
    statistics = pixel_statistics(extractor, fashion_mnist_pixels("test")[0], batch_size=1000, progress=False)
    statistics.save(cache)
    return statistics


def reference_rows(args: argparse.Namespace, extractor: ClassifierFeatures, test: FeatureStatistics) -> None:
    """Training images, the same blurred (Gaussian, radius 1 pixel), and uniform noise, --num-samples each."""
    if result_path(args, "reference:noise").is_file():
        return
    pixels = fashion_mnist_pixels("train")[0][: args.num_samples]
    blurred = torch.from_numpy(
        np.stack([np.asarray(Image.fromarray(p[0].numpy()).filter(ImageFilter.GaussianBlur(1))) for p in pixels])
    )[:, None]
    noise = torch.randint(0, 256, pixels.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for name, images in (("train", pixels), ("blurred train", blurred), ("noise", noise)):
        statistics = pixel_statistics(extractor, images, batch_size=1000, progress=False)
        save_result(args, f"reference:{name}", {"name": name, "fd": frechet_distance(statistics, test)})


def sampler_pipeline(
    args: argparse.Namespace, sampler: str, model: Path | None = None, spacing: str | None = None
) -> tuple[SimpleDDPMPipeline, float | None]:
    """The pipeline with the sampler's scheduler (its timestep_spacing replaced by `spacing`, if given) and eta."""
    pipe = SimpleDDPMPipeline.from_pretrained(model or args.model)
    pipe.set_progress_bar_config(disable=True)
    if sampler in ("diffusers-ddim", "diffusers-ddim-clipped"):
        ddim = ClippedEpsDDIMScheduler if sampler == "diffusers-ddim-clipped" else DDIMScheduler
        pipe.scheduler, eta = ddim.from_config(pipe.scheduler.config), 0.0
    else:
        eta = use_sampler(pipe, sampler)
    if spacing is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, timestep_spacing=spacing)
    return pipe, eta


def parse_config(config: str) -> tuple[str, int, str | None]:
    """SAMPLER:STEPS[:SPACING] -> (sampler, steps, timestep spacing or None for the model's own)."""
    sampler, steps, *spacing = config.split(":")
    if sampler not in SAMPLERS or not steps.isdigit() or len(spacing) > 1 or not set(spacing) <= set(SPACINGS):
        raise SystemExit(
            f"error: {config!r} is not SAMPLER:STEPS[:SPACING] with SAMPLER one of {', '.join(SAMPLERS)} and "
            f"SPACING one of {', '.join(SPACINGS)}"
        )
    return sampler, int(steps), (spacing or [None])[0]


def timed_frechet(
    pipe,
    extractor: ClassifierFeatures,
    test: FeatureStatistics,
    num_samples: int,
    batch_size: int,
    steps: int,
    eta: float | None,
    seed: int = 0,
) -> tuple[float, float]:
    """FD to `test` of `num_samples` samples of `pipe` (image i from seed + i), and the seconds it took."""
    start = time.perf_counter()
    statistics = sample_statistics(
        pipe,
        extractor,
        num_samples,
        batch_size=batch_size,
        seed=seed,
        num_inference_steps=steps,
        eta=eta,
        progress=False,
    )
    return frechet_distance(statistics, test), time.perf_counter() - start


def measure(
    args: argparse.Namespace,
    config: str,
    extractor: ClassifierFeatures,
    test: FeatureStatistics,
    model: Path | None = None,
) -> dict:
    """FD of --num-samples images of `model` (default --model) drawn as `config` (SAMPLER:STEPS[:SPACING]) says."""
    sampler, steps, spacing = parse_config(config)
    pipe, eta = sampler_pipeline(args, sampler, model, spacing)
    fd, seconds = timed_frechet(pipe, extractor, test, args.num_samples, args.batch_size, steps, eta)
    result = {"sampler": sampler, "steps": steps, "fd": fd, "seconds": seconds}
    if spacing is not None:
        result["spacing"] = spacing
    print(f"{config} of {model or args.model}: FD {result['fd']:.3f}, {seconds:.0f} s", flush=True)
    return result if model else save_result(args, config, result)


def measure_run(args: argparse.Namespace, run: str, extractor: ClassifierFeatures, test: FeatureStatistics) -> None:
    """FD of a bench_quality run at --run-steps DDPM steps; for the main run, that is the ddpm row's own result."""
    config = f"ddpm:{args.run_steps}"
    model = bench_quality.WORK / run
    if model.resolve() == args.model.resolve() and result_path(args, config).is_file():
        result = json.loads(result_path(args, config).read_text())
    else:
        train_model(args, run)
        result = measure(args, config, extractor, test, model)
    save_result(args, f"run:{run}:{args.run_steps}", {**result, "run": run})


def write_grid(args: argparse.Namespace) -> None:
    """12 samples of the same seeds for each sampler at 25 steps, one row each (ddpm, ddim, diffusers-ddim, dpm++)."""
    rows = []
    for sampler in PLOTTED:
        pipe, eta = sampler_pipeline(args, sampler)
        generators = [torch.Generator().manual_seed(i) for i in range(12)]
        rows.append(pipe(batch_size=12, generator=generators, num_inference_steps=25, eta=eta, output_type="pt")[0])
    image_grid(torch.cat(rows), cell_size=56, cols=12).save(args.grid, optimize=True)


def load_results(args: argparse.Namespace) -> tuple[list[dict], list[dict], list[dict]]:
    """The sampler rows, the reference rows and the bench_quality runs' rows on disk."""
    files = sorted((args.work / "results").glob(f"*-{args.num_samples}.json"))
    results = [json.loads(f.read_text()) for f in files]
    samples = [r for r in results if "sampler" in r and "run" not in r]
    return samples, [r for r in results if "sampler" not in r], [r for r in results if "run" in r]


def print_table(args: argparse.Namespace) -> None:
    samples, references, runs = load_results(args)
    classifier = json.loads((args.work / "classifier.json").read_text())
    print(f"Feature classifier: test accuracy {classifier['test_accuracy']:.4f} ({classifier['epochs']} epochs)")
    print(f"Frechet distance to the 10,000 test images, {args.num_samples} images per row (lower is better)\n")
    # Every sampler here makes one network call per step: the steps are the cost (wall times on a shared machine
    # are in the result files, not comparable between rows).
    print("| sampler | steps = network calls per image | FD |")
    print("|---|---|---|")
    for r in sorted(samples, key=lambda r: (SAMPLERS.index(r["sampler"]), "spacing" in r, -r["steps"])):
        spacing = f", {r['spacing']} spacing" if "spacing" in r else ""
        print(f"| {r['sampler']}{spacing} | {r['steps']} | {r['fd']:.1f} |")
    for r in references:
        print(f"| reference: {r['name']} | | {r['fd']:.1f} |")
    if runs:
        print_runs_table(runs)


def print_runs_table(runs: list[dict]) -> None:
    """Each bench_quality run's FD beside its bits/dim (exact where bench_quality computed it, else its estimate)."""
    quality_args = bench_quality.parse_args([])
    print(
        f"\nbench_quality.py's runs, samples at {runs[0]['steps']} DDPM steps, beside their bits/dim on the test set\n"
    )
    print("| run | bits/dim | FD |")
    print("|---|---|---|")
    for r in sorted(runs, key=lambda r: list(bench_quality.RUNS).index(r["run"])):
        exact = bench_quality.exact_result(quality_args, r["run"])
        estimate = bench_quality.read_json(bench_quality.result_path(quality_args, f"estimate:{r['run']}"))
        if exact:
            bits = f"{np.mean(exact['bits_per_dim']):.3f} (exact, {len(exact['bits_per_dim']):,} images)"
        elif estimate:
            bits = f"{estimate['bits_per_dim']:.3f} (estimate, {estimate['images']:,} images)"
        else:
            bits = "not run"
        print(f"| {r['run']} | {bits} | {r['fd']:.1f} |")


def draw_plot(args: argparse.Namespace) -> None:
    """FD against steps on a log axis, one line per sampler, the training-images floor dashed."""
    samples, references, _ = load_results(args)
    if not samples:
        return
    series = {
        sampler: sorted((r["steps"], r["fd"]) for r in samples if r["sampler"] == sampler and "spacing" not in r)
        for sampler in PLOTTED
    }
    floor = next((r["fd"] for r in references if r["name"] == "train"), None)
    line_plot(
        args.plot,
        series,
        title=f"Frechet distance to the test set, {args.num_samples} samples (classifier features)",
        x_label="sampling steps (network calls per image)",
        y_label="Frechet distance",
        reference=None if floor is None else (floor, "1,000 training images"),
    )


def main() -> None:
    args = parse_args()
    if not args.table:
        torch.set_num_threads(args.threads)
        for config in args.configs:
            parse_config(config)
        classifier = train_classifier(args)
        print(f"Feature classifier: test accuracy {classifier['test_accuracy']:.4f}", flush=True)
        extractor = ClassifierFeatures(args.work / "classifier.safetensors")
        test = test_statistics(args, extractor)
        reference_rows(args, extractor, test)
        if not (args.model / "metrics.json").is_file():
            if args.model.resolve() != (bench_quality.WORK / bench_quality.MAIN_RUN).resolve():
                raise SystemExit(f"error: no trained pipeline at --model {args.model}")
            train_model(args)
        for config in args.configs:
            if not result_path(args, config).is_file():
                measure(args, config, extractor, test)
        for run in args.runs:
            if not result_path(args, f"run:{run}:{args.run_steps}").is_file():
                measure_run(args, run, extractor, test)
        if not args.grid.is_file():
            write_grid(args)
    print_table(args)
    draw_plot(args)


if __name__ == "__main__":
    main()
