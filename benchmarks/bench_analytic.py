"""Fewer steps at the same quality: the analytic reverse variance (Bao et al. 2022, Analytic-DPM) and optimal
timesteps against fixed variances, on bench_quality.py's Fashion-MNIST models.

    python benchmarks/bench_analytic.py                      # the full grid (days on a CPU, minutes on a GPU)
    python benchmarks/bench_analytic.py --estimate-images 16 --bound-images 50 --num-samples 250 \\
        --steps 25 10 --fd-samplers ddpm-small ddpm-large analytic-ddpm ddim analytic-ddim   # a reduced run
    python benchmarks/bench_analytic.py --table              # the tables again, from the results on disk

For each model (--models, bench_quality.py pipeline folders, trained there):
1. G_t = E||eps_theta(x_t, t)||^2 / d from --estimate-images training images (`estimate_analytic_variance`, one
   noise draw per image and timestep, M x T network calls), with its cost; with --sensitivity M1 M2 ..., also
   from the first M_i of those images, and the 25-step analytic bound under each table; with --subset-estimate M,
   from M images at the timesteps of the even --subset-steps chains only (the K-step analytic bound reads G only
   at its chain's steps, so its bound under that estimate is exact, at K/T of the cost).
2. The K-step chain's own bound (`pipe.elbo(images, num_inference_steps=K)`, prior + K - 1 KL terms + decoder, in
   bits/dim) on the first --bound-images test images for every K of --steps: DDPM with beta~ ("ddpm-small"),
   beta ("ddpm-large") and the analytic variance, on even ("linspace") and optimal timesteps. The network's
   outputs are shared: the variances of one chain are evaluated on the same x_t and network output, as
   `elbo` would draw them with the same seed (chain_vb_terms_bpd for each scheduler), so the rows pair up.
3. The Frechet distance (bench_fid.py's classifier features and its helpers) of --num-samples samples (image i
   from seed i: every row starts from the same x_T) for --fd-samplers at every K of --steps, on even and, for
   the analytic samplers, optimal timesteps. A learned-variance model (--learned) is measured at the same K.
   --seed S draws the rows from seeds S to S + N - 1 instead: the spread of an FD row over seed sets.
4. With --paired-steps: DDPM and Analytic-DDPM samples from the same seeds, how far apart they end (8-bit levels).
`--table` also prints sigma*^2 / beta~ along the even chains and draws analytic_fd.png and analytic_bound.png.

Results are JSON files under --work/results, one per measurement, skipped when present (a stopped run resumes).
The 1,000-step rows, when 1000 is in --steps: the bound is estimated with `elbo(num_timesteps=--reference-timesteps)`
(stratified, unbiased), and the FD is sampled when 1000 is also in --fd-steps (default: --steps).
"""

import argparse
import json
import time
from pathlib import Path

import bench_fid
import bench_quality
import torch
from diffusers.utils.torch_utils import randn_tensor
from plotting import line_plot

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.analytic_dpm import analytic_variance
from simple_ddpm.cpu_threads import configure_cpu_threads
from simple_ddpm.feature_networks import ClassifierFeatures
from simple_ddpm.frechet import frechet_distance
from simple_ddpm.sample_quality import pixel_statistics
from simple_ddpm.sampling import generate_images

WORK = bench_quality.BENCHMARKS / "_work" / "analytic"
# name -> (variance_type, eta)
SAMPLERS = {
    "ddpm-small": ("fixed_small", 1.0),
    "ddpm-large": ("fixed_large", 1.0),
    "analytic-ddpm": ("analytic", 1.0),
    "ddim": ("fixed_small", 0.0),
    "analytic-ddim": ("analytic", 0.0),
}
BOUND_VARIANCES = ("fixed_small", "fixed_large", "analytic")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", type=Path, default=[bench_quality.WORK / bench_quality.MAIN_RUN])
    parser.add_argument("--learned", type=Path, default=bench_quality.WORK / "learned-hybrid")
    parser.add_argument("--steps", nargs="*", type=int, default=[10, 25, 50, 100, 1000])
    parser.add_argument("--fd-steps", nargs="*", type=int, help="K of the FD rows (default: --steps)")
    parser.add_argument("--estimate-images", type=int, default=100, help="M training images for G_t (default 100)")
    parser.add_argument("--sensitivity", nargs="*", type=int, default=[10], help="also G from the first M_i images")
    parser.add_argument("--bound-images", type=int, default=1000, help="test images of the K-step bound")
    parser.add_argument("--reference-timesteps", type=int, default=100, help="strata of the 1,000-step estimate")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per FD row (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="sample i of an FD row from seed --seed + i")
    parser.add_argument(
        "--subset-estimate",
        type=int,
        help="also G from this many training images at the timesteps of the even --subset-steps chains only",
    )
    parser.add_argument("--subset-steps", nargs="*", type=int, default=[25, 50])
    parser.add_argument("--paired-steps", nargs="*", type=int, default=[], help="K of paired_samples' comparison")
    parser.add_argument("--paired-images", type=int, default=64)
    parser.add_argument("--fd-samplers", nargs="*", choices=list(SAMPLERS), default=list(SAMPLERS))
    parser.add_argument("--spacings", nargs="*", default=["linspace", "optimal"])
    parser.add_argument("--batch-size", type=int, default=250, help="images per network call")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--fid-work", type=Path, default=bench_fid.WORK, help="bench_fid.py's classifier folder")
    parser.add_argument("--table", action="store_true", help="only print the tables from the results on disk")
    parser.add_argument("--pictures", type=Path, default=bench_quality.BENCHMARKS, help="where the plots go")
    return parser.parse_args(argv)


def result(args: argparse.Namespace, name: str, measure) -> dict:
    """The JSON result `name`, measured by `measure()` unless it is on disk."""
    path = args.work / "results" / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    value = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
    print(f"{name}: {json.dumps({k: v for k, v in value.items() if not isinstance(v, list)})}", flush=True)
    return value


def load(model: Path, **scheduler_config) -> SimpleDDPMPipeline:
    pipe = SimpleDDPMPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    if scheduler_config:
        pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, **scheduler_config)
    return pipe


def training_images(count: int) -> torch.Tensor:
    pixels = bench_fid.fashion_mnist_pixels("train")[0][:count]
    return pixels.float() / 127.5 - 1


def estimate(args: argparse.Namespace, model: Path, count: int) -> dict:
    pipe, images = load(model), training_images(count)
    start = time.perf_counter()
    table = pipe.estimate_analytic_variance(images, generator=torch.Generator().manual_seed(0), batch_size=1000)
    seconds = time.perf_counter() - start
    return {"images": count, "network_calls": count * len(table), "seconds": seconds, "table": table.tolist()}


def chain_timesteps(model: Path, steps: list[int]) -> list[int]:
    """The training timesteps of the even ("linspace") chains of `steps` steps, together, ascending."""
    timesteps, scheduler = set(), SimpleDDPMScheduler.from_pretrained(model, subfolder="scheduler")
    for count in steps:
        scheduler.set_timesteps(count)
        timesteps.update(scheduler.timesteps.tolist())
    return sorted(timesteps)


def estimate_at(args: argparse.Namespace, model: Path, count: int, timesteps: list[int]) -> dict:
    """G_t from the first `count` training images at `timesteps` only, as `estimate_analytic_variance` draws it
    (one noise draw per image and timestep, estimator "prediction_error"): count x len(timesteps) network calls."""
    pipe, images = load(model), training_images(count)
    generator, sums = torch.Generator().manual_seed(0), torch.zeros(len(timesteps), dtype=torch.float64)
    steps_per_call = max(1, args.batch_size // min(count, args.batch_size))
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, count, args.batch_size):
            rows = images[first : first + args.batch_size]
            for at in range(0, len(timesteps), steps_per_call):
                ts = timesteps[at : at + steps_per_call]
                sums[at : at + len(ts)] += pipe._analytic_squares(rows, None, ts, generator, "prediction_error")
    return {
        "images": count,
        "timesteps": timesteps,
        "network_calls": count * len(timesteps),
        "seconds": time.perf_counter() - start,
        "mean_squared_eps": (1 - sums / count).tolist(),
    }


def shared_chain_bounds(
    args: argparse.Namespace, model: Path, table: list[float], steps: int, spacing: str, variances: tuple[str, ...]
) -> dict:
    """Bits/dim of the `steps`-step chain (`spacing`) under each variance of `variances`, from one pass of the
    network: for each test image and chain step, x_t ~ q(x_t | x_0) and the network's output are shared, and each
    scheduler's `chain_vb_terms_bpd` scores them, as `pipe.elbo(num_inference_steps=steps)` does for one."""
    pipe = load(model)
    config = {"analytic_mean_squared_eps": table, "timestep_spacing": spacing}
    schedulers = {
        v: SimpleDDPMScheduler.from_config(pipe.scheduler.config, variance_type=v, **config) for v in variances
    }
    for scheduler in schedulers.values():
        scheduler.set_timesteps(steps)
    chain = next(iter(schedulers.values())).timesteps.tolist()
    x0 = bench_quality.test_images(args.bound_images).double()
    totals = {v: torch.zeros(len(x0), dtype=torch.float64) for v in variances}
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(x0), args.batch_size):
            rows = x0[first : first + args.batch_size]
            for step in chain:
                t = torch.full((len(rows),), step)
                noise = randn_tensor(rows.shape, generator=generator, dtype=torch.float32).double()
                x_t = pipe.scheduler.add_noise(rows, noise, t)
                output = pipe.unet(x_t.float(), t).sample.double()
                for variance, scheduler in schedulers.items():
                    totals[variance][first : first + len(rows)] += scheduler.chain_vb_terms_bpd(output, rows, x_t, t)
            for variance, scheduler in schedulers.items():
                totals[variance][first : first + len(rows)] += scheduler.prior_bpd(rows, chain[0])
    seconds = time.perf_counter() - start
    bits = {v: (totals[v].mean().item(), (totals[v].std() / len(x0) ** 0.5).item()) for v in variances}
    per_image = {v: totals[v].tolist() for v in variances}
    return {
        "steps": steps,
        "spacing": spacing,
        "chain": chain,
        "images": len(x0),
        "seconds": seconds,
        "bits": bits,
        "per_image": per_image,
    }


def reference_bound(args: argparse.Namespace, model: Path, table: list[float]) -> dict:
    """The 1,000-step bound, stratified estimate (`elbo(num_timesteps=...)`), fixed_small and analytic."""
    images, bits, per_image = bench_quality.test_images(args.bound_images), {}, {}
    start = time.perf_counter()
    for variance in ("fixed_small", "analytic"):
        pipe = load(model, variance_type=variance, analytic_mean_squared_eps=table)
        out = pipe.elbo(
            images, generator=torch.Generator().manual_seed(0), batch_size=1000, num_timesteps=args.reference_timesteps
        ).bits_per_dim
        bits[variance] = (out.mean().item(), (out.std() / len(out) ** 0.5).item())
        per_image[variance] = out.tolist()
    return {
        "images": len(images),
        "strata": args.reference_timesteps,
        "bits": bits,
        "per_image": per_image,
        "seconds": time.perf_counter() - start,
    }


def frechet(args: argparse.Namespace, model: Path, table: list[float] | None, sampler: str, steps: int, spacing: str):
    extractor = ClassifierFeatures(args.fid_work / "classifier.safetensors")
    test = bench_fid.test_statistics(argparse.Namespace(work=args.fid_work), extractor)
    if sampler == "learned":
        pipe, eta = load(model, timestep_spacing=spacing), 1.0
    else:
        variance, eta = SAMPLERS[sampler]
        pipe = load(model, variance_type=variance, analytic_mean_squared_eps=table, timestep_spacing=spacing)
    fd, seconds = bench_fid.timed_frechet(
        pipe, extractor, test, args.num_samples, args.batch_size, steps, eta, seed=args.seed
    )
    return {
        "sampler": sampler,
        "steps": steps,
        "spacing": spacing,
        "samples": args.num_samples,
        "seed": args.seed,
        "fd": fd,
        "seconds": seconds,
    }


def paired_samples(args: argparse.Namespace, model: Path, table: list[float], steps: int) -> dict:
    """DDPM (beta~) and Analytic-DDPM samples from the same seeds (the same x_T and the same z of every step: only
    the variance differs), on the 8-bit grid: how far apart they end, in 8-bit levels, and each one's pixel
    standard deviation beside the test images'. Where they end within a level or two of each other, no feature
    network can tell the samplers apart."""
    samples = {}
    for sampler in ("ddpm-small", "analytic-ddpm"):
        variance, eta = SAMPLERS[sampler]
        pipe = load(model, variance_type=variance, analytic_mean_squared_eps=table)
        images = generate_images(
            pipe, args.paired_images, batch_size=args.batch_size, num_inference_steps=steps, eta=eta, progress=False
        )
        samples[sampler] = (images * 255).round()
    difference = (samples["analytic-ddpm"] - samples["ddpm-small"]).abs()
    test = bench_quality.test_images(1000).double() * 127.5 + 127.5
    return {
        "steps": steps,
        "images": args.paired_images,
        "mean_abs_levels": difference.mean().item(),
        "fraction_over_8_levels": (difference > 8).double().mean().item(),
        "pixel_std": {name: images.std().item() for name, images in samples.items()} | {"test": test.std().item()},
    }


def frechet_floor(args: argparse.Namespace) -> dict:
    """FD of --num-samples training images: what finite samples alone leave (bench_fid.py's reference row)."""
    extractor = ClassifierFeatures(args.fid_work / "classifier.safetensors")
    test = bench_fid.test_statistics(argparse.Namespace(work=args.fid_work), extractor)
    pixels = bench_fid.fashion_mnist_pixels("train")[0][: args.num_samples]
    statistics = pixel_statistics(extractor, pixels, batch_size=1000, progress=False)
    fd = frechet_distance(statistics, test)
    return {"sampler": "training images", "steps": 0, "spacing": "-", "samples": args.num_samples, "fd": fd}


def seed_suffix(args: argparse.Namespace) -> str:
    return f"-seed{args.seed}" if args.seed else ""


def run_model(args: argparse.Namespace, model: Path) -> None:
    name = model.name
    main = result(args, f"{name}-estimate-{args.estimate_images}", lambda: estimate(args, model, args.estimate_images))
    tables = {args.estimate_images: main["table"]}
    for count in args.sensitivity:
        tables[count] = result(args, f"{name}-estimate-{count}", lambda c=count: estimate(args, model, c))["table"]
    table = main["table"]
    for steps in [k for k in args.steps if k < 1000]:
        for spacing in args.spacings:
            variances = BOUND_VARIANCES if spacing == "linspace" else ("analytic",)
            key = f"{name}-bound-{steps}-{spacing}-{args.bound_images}"
            result(
                args, key, lambda s=steps, sp=spacing, v=variances: shared_chain_bounds(args, model, table, s, sp, v)
            )
    for count, other in tables.items():
        for spacing in args.spacings if count != args.estimate_images else []:
            key = f"{name}-bound-25-{spacing}-{args.bound_images}-M{count}"
            result(args, key, lambda o=other, sp=spacing: shared_chain_bounds(args, model, o, 25, sp, ("analytic",)))
    if args.subset_estimate:
        subset = result(
            args,
            f"{name}-estimate-{args.subset_estimate}-at-{'-'.join(map(str, args.subset_steps))}",
            lambda: estimate_at(args, model, args.subset_estimate, chain_timesteps(model, args.subset_steps)),
        )
        # the K-step analytic bound reads G only at its chain's steps: the main table with those entries replaced
        # is the subset estimate's bound exactly
        patched = torch.tensor(table, dtype=torch.float64)
        patched[subset["timesteps"]] = torch.tensor(subset["mean_squared_eps"], dtype=torch.float64)
        for steps in args.subset_steps:
            key = f"{name}-bound-{steps}-linspace-{args.bound_images}-M{args.subset_estimate}"
            result(
                args,
                key,
                lambda k=steps: shared_chain_bounds(args, model, patched.tolist(), k, "linspace", ("analytic",)),
            )
    if 1000 in args.steps:
        result(args, f"{name}-bound-1000-{args.bound_images}", lambda: reference_bound(args, model, table))
    for steps in args.paired_steps:
        key = f"{name}-paired-{steps}-{args.paired_images}"
        result(args, key, lambda k=steps: paired_samples(args, model, table, k))
    bench_fid.train_classifier(argparse.Namespace(work=args.fid_work, classifier_epochs=2))
    result(args, f"fd-floor-{args.num_samples}", lambda: frechet_floor(args))
    for steps in args.steps if args.fd_steps is None else args.fd_steps:
        for sampler in args.fd_samplers:
            spacings = args.spacings if sampler.startswith("analytic") and steps < 1000 else ["linspace"]
            for spacing in spacings:
                key = f"{name}-fd-{sampler}-{steps}-{spacing}-{args.num_samples}{seed_suffix(args)}"
                result(args, key, lambda s=sampler, k=steps, sp=spacing: frechet(args, model, table, s, k, sp))
        if args.learned.is_dir() and steps < 1000:
            bound_key = f"{args.learned.name}-bound-{steps}-linspace-{args.bound_images}"
            result(args, bound_key, lambda k=steps: learned_bound(args, k))
            key = f"{args.learned.name}-fd-learned-{steps}-linspace-{args.num_samples}{seed_suffix(args)}"
            result(args, key, lambda k=steps: frechet(args, args.learned, None, "learned", k, "linspace"))


def learned_bound(args: argparse.Namespace, steps: int) -> dict:
    pipe, images = load(args.learned), bench_quality.test_images(args.bound_images)
    start = time.perf_counter()
    out = pipe.elbo(images, generator=torch.Generator().manual_seed(0), batch_size=1000, num_inference_steps=steps)
    bits, seconds = out.bits_per_dim, time.perf_counter() - start
    mean_and_error = (bits.mean().item(), (bits.std() / len(bits) ** 0.5).item())
    return {"steps": steps, "images": len(images), "seconds": seconds, "bits": {"learned": mean_and_error}}


def print_tables(args: argparse.Namespace) -> None:
    results = {p.stem: json.loads(p.read_text()) for p in sorted((args.work / "results").glob("*.json"))}
    for name, value in results.items():
        if "-estimate-" in name:
            print(
                f"{name}: {value['images']} images, {value['network_calls']} network calls, {value['seconds']:.0f} s"
            )
    print_sensitivity(results)
    print_variance_ratios(args, results)
    print("\nAnalytic-DDPM against DDPM (beta~) from the same seeds, 8-bit levels")
    for name, value in results.items():
        if "-paired-" in name:
            std = ", ".join(f"{k} {v:.1f}" for k, v in value["pixel_std"].items())
            print(
                f"{name.split('-paired-')[0]:18} K = {value['steps']:>4}: mean |difference| "
                f"{value['mean_abs_levels']:.2f} levels, {100 * value['fraction_over_8_levels']:.2f}% of pixels "
                f"over 8 levels apart; pixel std {std} ({value['images']} images)"
            )
    print("\nK-step bound, bits/dim (mean +- standard error over test images)")
    print(f"{'model':18} {'K':>5} {'spacing':9} {'DDPM beta~':>16} {'DDPM beta':>16} {'analytic':>16} {'learned':>16}")
    for name, value in results.items():
        if "-bound-" not in name:
            continue
        bits = value["bits"]
        cells = [
            f"{bits[v][0]:.3f} +- {bits[v][1]:.3f}" if v in bits else "-"
            for v in ("fixed_small", "fixed_large", "analytic", "learned")
        ]
        model = name.split("-bound-")[0]
        extra = name.split("-")[-1] if name.split("-")[-1].startswith("M") else ""
        steps = value.get("steps", 1000)
        print(f"{model:18} {steps:>5} {value.get('spacing', 'all'):9} " + " ".join(f"{c:>16}" for c in cells), extra)
    print("\nPaired against the 1,000-step fixed_small bound of the same images (mean difference +- standard error)")
    for name, value in results.items():
        if "-bound-1000-" in name and "per_image" in value:
            print_paired(name.split("-bound-")[0], torch.tensor(value["per_image"]["fixed_small"]), results)

    print("\nFrechet distance (bench_fid.py's classifier features)")
    for name, value in results.items():
        if name.startswith("fd-floor"):
            print(
                f"{'(floor)':18} {'training images':14} {'':>5} {'':9} {value['fd']:8.2f}  ({value['samples']} images)"
            )
    rows = sorted(
        (
            (name.split("-fd-")[0], v["sampler"], v["steps"], v["spacing"], v.get("seed", 0), v)
            for name, v in results.items()
            if "-fd-" in name
        ),
        key=lambda row: row[:5],
    )
    for model, sampler, steps, spacing, seed, value in rows:
        print(
            f"{model:18} {sampler:14} {steps:>5} {spacing:9} {value['fd']:8.2f}  ({value['samples']} samples from "
            f"seed {seed}, {value['seconds']:.0f} s)"
        )


FD_SERIES = {  # plotted name -> (sampler, spacing) of the FD results
    "DDPM, beta~": ("ddpm-small", "linspace"),
    "DDPM, beta": ("ddpm-large", "linspace"),
    "Analytic-DDPM": ("analytic-ddpm", "linspace"),
    "Analytic-DDPM, optimal": ("analytic-ddpm", "optimal"),
    "DDIM": ("ddim", "linspace"),
    "Analytic-DDIM": ("analytic-ddim", "linspace"),
    "learned variance": ("learned", "linspace"),
}
BOUND_SERIES = {  # plotted name -> (spacing, variance) of the bound results
    "DDPM, beta~": ("linspace", "fixed_small"),
    "DDPM, beta": ("linspace", "fixed_large"),
    "Analytic-DDPM": ("linspace", "analytic"),
    "Analytic-DDPM, optimal": ("optimal", "analytic"),
    "learned variance": ("linspace", "learned"),
}


def draw_plots(args: argparse.Namespace, results: dict, model: str) -> None:
    """benchmarks/analytic_fd.png and analytic_bound.png: FD and the K-step bound of `model` against K, each
    sampler a line, the targets dashed (1,000-step DDPM's FD + 10%, the 1,000-step fixed-variance bound)."""
    learned = args.learned.name
    fd_rows = [
        v
        for n, v in results.items()
        if (n.startswith(f"{model}-fd-") or n.startswith(f"{learned}-fd-"))
        and v["samples"] == args.num_samples
        and not v.get("seed")
    ]
    reference = [v["fd"] for v in fd_rows if v["sampler"] == "ddpm-small" and v["steps"] == 1000]
    series = {}
    for label, (sampler, spacing) in FD_SERIES.items():
        points = [(v["steps"], v["fd"]) for v in fd_rows if (v["sampler"], v["spacing"]) == (sampler, spacing)]
        if points:
            series[label] = points
    if series and reference:
        line_plot(
            args.pictures / "analytic_fd.png",
            series,
            title=f"Frechet distance of {args.num_samples} samples (classifier features), {model}",
            x_label="sampling steps K (network calls per image)",
            y_label="Frechet distance",
            reference=(1.1 * reference[0], "1,000-step DDPM + 10%"),
        )
    bound_rows = {
        n: v
        for n, v in results.items()
        if (n.startswith(f"{model}-bound-") or n.startswith(f"{learned}-bound-"))
        and n.endswith(f"-{args.bound_images}")
        and "-bound-1000-" not in n
    }
    reference_bound = results.get(f"{model}-bound-1000-{args.bound_images}")
    series = {}
    for label, (spacing, variance) in BOUND_SERIES.items():
        points = [
            (v["steps"], v["bits"][variance][0])
            for v in bound_rows.values()
            if v.get("spacing", "linspace") == spacing and variance in v["bits"]
        ]
        if points:
            series[label] = points
    if series and reference_bound:
        line_plot(
            args.pictures / "analytic_bound.png",
            series,
            title=f"K-step bound ({args.bound_images} test images), {model}",
            x_label="sampling steps K (network calls per image)",
            y_label="bits/dim",
            reference=(reference_bound["bits"]["fixed_small"][0], "1,000-step bound, beta~"),
            y_range=(3.5, 7.5),
        )


def print_sensitivity(results: dict) -> None:
    """How far each full table's 1 - G_t (what the variance multiplies) is from a larger subset estimate's."""
    for name, subset in results.items():
        if "-estimate-" not in name or "timesteps" not in subset:
            continue
        model, index = name.split("-estimate-")[0], subset["timesteps"]
        reference = 1 - torch.tensor(subset["mean_squared_eps"], dtype=torch.float64)
        print(f"\n1 - G_t of {model}'s tables against M = {subset['images']} at the {len(index)} timesteps of {name}")
        for other, value in results.items():
            if other.startswith(f"{model}-estimate-") and "table" in value:
                gap = 1 - torch.tensor(value["table"], dtype=torch.float64)[index]
                relative = ((gap - reference) / reference).abs()
                print(
                    f"  M = {value['images']:>4}: relative difference median {relative.median().item():.3f}, "
                    f"max {relative.max().item():.3f}"
                )


def print_variance_ratios(args: argparse.Namespace, results: dict) -> None:
    """sigma*^2 / beta~ along each even chain (no network calls): where it is near 1, Analytic-DDPM samples as
    DDPM does, whatever the bound says."""
    for name, value in results.items():
        model = name.split("-estimate-")[0]
        if "-estimate-" not in name or "table" not in value or value["images"] != args.estimate_images:
            continue
        print(f"\nsigma*^2 / beta~ of {model}'s Analytic-DDPM steps (M = {value['images']}), even chains")
        scheduler = SimpleDDPMScheduler.from_pretrained(bench_quality.WORK / model, subfolder="scheduler")
        for steps in (10, 25, 50, 100):
            scheduler.set_timesteps(steps)
            chain = scheduler.timesteps[:-1]  # the last step outputs its mean
            alpha_bar = scheduler.alphas_cumprod[chain]
            alpha_bar_prev = scheduler.alphas_cumprod[scheduler.timesteps[1:]]
            beta_tilde = (1 - alpha_bar / alpha_bar_prev) * (1 - alpha_bar_prev) / (1 - alpha_bar)
            table = torch.tensor(value["table"], dtype=torch.float64)[chain]
            ratio = analytic_variance(alpha_bar, alpha_bar_prev, beta_tilde, table) / beta_tilde
            print(
                f"  K = {steps:>3}: first step {ratio[0].item():.2f}, median {ratio.median().item():.3f}, "
                f"max {ratio.max().item():.2f}, steps above 1.1: {(ratio > 1.1).sum().item()} of {len(ratio)}"
            )


def print_paired(model: str, reference: torch.Tensor, results: dict) -> None:
    for name, row in results.items():
        if not name.startswith(f"{model}-bound-") or "-bound-1000-" in name or "per_image" not in row:
            continue
        for variance, bits in row["per_image"].items():
            if len(bits) == len(reference):
                difference = torch.tensor(bits) - reference
                error = (difference.std() / len(difference) ** 0.5).item()
                label = f"{model:18} {row['steps']:>5} {row['spacing']:9} {variance:12}"
                print(f"{label} {difference.mean().item():+.3f} +- {error:.3f}")


def main() -> None:
    args = parse_args()
    if not args.table:
        print(configure_cpu_threads().describe(), flush=True)  # OMP_NUM_THREADS=1 for one thread
        for model in args.models:
            run_model(args, model)
    print_tables(args)
    results = {p.stem: json.loads(p.read_text()) for p in sorted((args.work / "results").glob("*.json"))}
    draw_plots(args, results, bench_quality.MAIN_RUN)  # the plots are of the main model, whatever --models


if __name__ == "__main__":
    main()
