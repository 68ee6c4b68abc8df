"""Training recipes at equal budget on Fashion-MNIST: the Frechet distance against images seen, and the bound.

    apt-get install dataset-fashion-mnist && python benchmarks/fashion_mnist.py    # once: the data
    python benchmarks/bench_recipe.py --stage screen          # every cell at bench_quality's budget (600 x 32)
    python benchmarks/bench_recipe.py --stage finals --cells epsilon-simple-linear sample-min_snr-cosine ...
    python benchmarks/bench_recipe.py --table                 # the tables and the plot from the results on disk

Every cell trains the same `tiny` UNet on the same data for the same number of images, with the same seed, data
order and learning-rate schedule, differing only in its recipe: prediction type (epsilon, sample, v_prediction)
x loss weighting (simple, min_snr, p2) x beta schedule (linear, cosine, sigmoid), and candidates added to train.py
(log-normal timesteps, EDM's noise distribution: `-log_normal` cells). train.py measures the Frechet
distance of --fid-samples samples (100 DDPM steps, the same seeds every time) to the 10,000 test images four
times during training (the curve of FD against images seen) and at the end; the features are bench_fid.py's
Fashion-MNIST classifier (trained here on first use). A second job per cell estimates the held-out bound on the
first --eval-images test images (the unbiased K-timestep estimate in groups, as bench_quality.py) with the
trained variance and with the analytic variance (Bao et al. 2022; the table train.py stores), which is the
meaningful bound of x- and v-prediction models whose fixed-variance bound explodes.

Stages: "screen" runs every cell of the grid at 600 x 32 images, one seed; "finals" runs the --cells given at
2,400 x 32 and 938 x 64 images (60,000: one epoch), with seeds 0 and 1 for the seed-to-seed spread. Jobs run as
subprocesses in --lanes lanes, one torch thread each on a CPU; every job writes its result under
benchmarks/_work/recipe and is skipped when that result exists, so an interrupted run resumes where it stopped.
On a GPU, pass --device cuda and more lanes: the jobs then share the GPU.
"""

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))

import bench_fid  # noqa: E402
import bench_quality  # noqa: E402
from plotting import line_plot, scatter_plot  # noqa: E402

WORK = BENCHMARKS / "_work" / "recipe"
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
WEIGHTINGS = ("simple", "min_snr", "p2")
SCHEDULES = ("linear", "cosine", "sigmoid")
DEFAULT_CELL = "epsilon-simple-linear"  # Ho et al.'s recipe (--recipe ddpm), train.py's default before the grid
BALANCED_CELL = "v_prediction-simple-cosine"  # --recipe balanced, train.py's default since the grid
# stage -> [(optimizer steps, images per step)]
BUDGETS = {"screen": [(600, 32)], "finals": [(2400, 32), (938, 64)]}
BUDGET_IMAGES_SCREEN = BUDGETS["screen"][0][0] * BUDGETS["screen"][0][1]  # before --budget can replace it
SEEDS = {"screen": (0,), "finals": (0, 1)}
LEARNING_RATE, WARMUP = 1e-3, 50  # the grid's; a run with others is a variant (settings_tag)
FID_LINE = re.compile(r"step (\d+): Frechet distance ([0-9.]+)")


# Candidates added to train.py for the grid, each on Ho et al.'s cell and the best-FD cell of the screen that can
# use it, and log-normal timesteps on the cosine schedule (the two least bounds of the screen together): a cell
# name with a fourth part, the --timestep_sampling.
TIMESTEP_SAMPLINGS = ("uniform", "log_normal")
CANDIDATE_CELLS = (
    "epsilon-simple-linear-log_normal",
    "v_prediction-simple-linear-log_normal",
    "epsilon-simple-cosine-log_normal",
)


def all_cells() -> list[str]:
    return ["-".join(cell) for cell in itertools.product(PREDICTION_TYPES, WEIGHTINGS, SCHEDULES)] + list(
        CANDIDATE_CELLS
    )


def parse_cell(cell: str) -> tuple[str, str, str, str]:
    """'v_prediction-min_snr-cosine' -> ('v_prediction', 'min_snr', 'cosine', 'uniform');
    'epsilon-simple-linear-log_normal' -> (..., 'log_normal')."""
    parts = cell.split("-")
    prediction_type, weighting, schedule, sampling = (parts + ["uniform"])[:4] if len(parts) in (3, 4) else [""] * 4
    if (
        prediction_type not in PREDICTION_TYPES
        or weighting not in WEIGHTINGS
        or schedule not in SCHEDULES
        or sampling not in TIMESTEP_SAMPLINGS
    ):
        raise SystemExit(
            f"error: cell {cell!r} is not PREDICTION-WEIGHTING-SCHEDULE[-SAMPLING] of {PREDICTION_TYPES}, "
            f"{WEIGHTINGS}, {SCHEDULES}, {TIMESTEP_SAMPLINGS}"
        )
    return prediction_type, weighting, schedule, sampling


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=list(BUDGETS), default="screen", help="the grid's stage (default screen)")
    parser.add_argument("--cells", nargs="+", help="cells to run (default: the whole grid for screen)")
    parser.add_argument(
        "--budget",
        nargs="+",
        metavar="STEPSxBATCH",
        help="budgets instead of the stage's, e.g. 20x8 for a smoke test of the benchmark itself",
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds instead of the stage's (screen: 0; finals: 0 1)")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=LEARNING_RATE,
        help=f"train.py --learning_rate (default {LEARNING_RATE:g}; another makes each run a variant of its cell)",
    )
    parser.add_argument(
        "--warmup", type=int, default=WARMUP, help=f"lr warmup steps (default {WARMUP}; another makes a variant)"
    )
    parser.add_argument(
        "--use-ema",
        action=argparse.BooleanOptionalAction,
        help="train.py --use_ema or --no-use_ema (default: its, EMA on; --no-use-ema makes a variant)",
    )
    parser.add_argument("--fid-samples", type=int, default=1000, help="samples per FD measurement (default 1000)")
    parser.add_argument("--fid-points", type=int, default=4, help="FD measurements during training (default 4)")
    parser.add_argument("--eval-images", type=int, default=1000, help="test images of the bound (default 1000)")
    parser.add_argument(
        "--analytic-images",
        type=int,
        default=100,
        help="training images of the analytic variance table, train.py --analytic_images (default 100)",
    )
    parser.add_argument("--eval-group", type=int, default=20, help="images per group of the estimate (default 20)")
    parser.add_argument("--eval-timesteps", type=int, default=16, help="K of the estimate (default 16)")
    parser.add_argument("--lanes", type=int, default=2, help="jobs at the same time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--work", type=Path, default=WORK, help=f"results and runs (default {WORK})")
    parser.add_argument(
        "--reference",
        default=BALANCED_CELL,
        help=f"the cell each table pairs the bounds with (default {BALANCED_CELL}, train.py's default recipe; "
        f"{DEFAULT_CELL} is Ho et al.'s)",
    )
    parser.add_argument("--table", action="store_true", help="only print the tables and draw the plot")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: the bound of one run, in this process
    args = parser.parse_args(argv)
    if args.cells is None:
        if args.stage != "screen" and not args.table:
            parser.error("--stage finals needs --cells: the finalists of the screening table")
        args.cells = all_cells()
    for cell in [*args.cells, args.reference]:
        parse_cell(cell)
    if args.seeds:
        SEEDS[args.stage] = tuple(args.seeds)
    if args.budget:
        try:
            BUDGETS[args.stage] = [tuple(int(n) for n in budget.split("x")) for budget in args.budget]
        except ValueError:
            parser.error(f"--budget takes STEPSxBATCH, e.g. 600x32; got {args.budget}")
    return args


def settings_tag(args: argparse.Namespace) -> str:
    """'' for the grid's learning rate, warmup and EMA; else what differs, e.g. 'lr0.002-no_ema': a variant's runs
    get their own folders, and its table pairs each cell with the same cell at the grid's settings."""
    tags = [f"lr{args.learning_rate:g}"] if args.learning_rate != LEARNING_RATE else []
    tags += [f"warmup{args.warmup}"] if args.warmup != WARMUP else []
    tags += ["no_ema"] if args.use_ema is False else []
    return "-".join(tags)


def run_name(cell: str, steps: int, batch_size: int, seed: int, tag: str = "") -> str:
    return f"{cell}-{steps}x{batch_size}-seed{seed}" + (f"-{tag}" if tag else "")


def runs(args: argparse.Namespace) -> list[tuple[str, str, int, int, int]]:
    """(run name, cell, steps, batch size, seed) of every run of the stage."""
    return [
        (run_name(cell, steps, batch_size, seed, settings_tag(args)), cell, steps, batch_size, seed)
        for (steps, batch_size), seed, cell in itertools.product(BUDGETS[args.stage], SEEDS[args.stage], args.cells)
    ]


def train_command(args: argparse.Namespace, run: str, cell: str, steps: int, batch_size: int, seed: int) -> list[str]:
    """train.py for one run: FD every steps / --fid-points against all 10,000 test images; its own final bound
    is made trivial (one timestep), the bound job below measures it on more images."""
    prediction_type, weighting, schedule, sampling = parse_cell(cell)
    return [
        sys.executable,
        str(REPO / "training" / "train.py"),
        f"--dataset_name={bench_quality.DATASET}",
        "--eval_split=test",
        "--num_eval_images=10000",
        "--model_preset=tiny",
        f"--prediction_type={prediction_type}",
        f"--loss_weighting={weighting}",
        f"--beta_schedule={schedule}",
        f"--timestep_sampling={sampling}",
        f"--train_batch_size={batch_size}",
        f"--max_train_steps={steps}",
        f"--learning_rate={args.learning_rate}",
        f"--lr_warmup_steps={args.warmup}",
        f"--seed={seed}",
        *({True: ["--use_ema"], False: ["--no-use_ema"]}.get(args.use_ema, [])),
        "--report_to=none",
        "--logging_steps=50",
        "--sample_every=0",
        "--eval_every=0",
        "--checkpointing_steps=0",
        f"--fid_every={max(1, steps // args.fid_points)}",
        f"--fid_num_samples={args.fid_samples}",
        f"--fid_features={args.work / 'fid' / 'classifier.safetensors'}",
        "--periodic_inference_steps=100",
        "--num_samples=64",
        "--num_inference_steps=100",
        "--final_eval_timesteps=1",
        f"--analytic_images={args.analytic_images}",
        "--eval_batch_size=250",
        "--mixed_precision=no",
        f"--output_dir={args.work / run}",
    ]


def bound_job(args: argparse.Namespace, run: str) -> dict:
    """The held-out bound of `run` with its trained variance and with the analytic variance."""
    from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler

    pipe = SimpleDDPMPipeline.from_pretrained(args.work / run).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    images = bench_quality.test_images(args.eval_images)
    result = {
        pipe.scheduler.config.variance_type: bench_quality.grouped_bound(
            pipe, images, args.eval_group, args.eval_timesteps, 250
        )
    }
    if pipe.scheduler.config.get("analytic_mean_squared_eps") is not None:
        pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, variance_type="analytic")
        result["analytic"] = bench_quality.grouped_bound(pipe, images, args.eval_group, args.eval_timesteps, 250)
    return result


def result_path(args: argparse.Namespace, run: str) -> Path:
    return args.work / "results" / f"{run}.json"


def log_path(args: argparse.Namespace, run: str) -> Path:
    return args.work / "logs" / f"{run}.log"


def run_jobs(args: argparse.Namespace) -> None:
    """Train every run, then its bound job, in --lanes lanes; a run's bound job follows its training in the same
    lane. Finished runs (metrics.json) and bounds (a result file) are skipped."""
    queue, lock, failures = list(runs(args)), threading.Lock(), []
    env = bench_quality.job_environment(REPO, args.threads)

    def call(command: list[str], log: Path, label: str) -> bool:
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"{time.strftime('%H:%M:%S')} start {label} (log {log})", flush=True)
        start = time.perf_counter()
        with log.open("a") as out:
            status = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        seconds = time.perf_counter() - start
        print(f"{time.strftime('%H:%M:%S')} end {label}: exit {status}, {seconds:.0f} s", flush=True)
        return status == 0

    def lane() -> None:
        while True:
            with lock:
                if not queue:
                    return
                run, cell, steps, batch_size, seed = queue.pop(0)
            if not (args.work / run / "metrics.json").is_file():
                command = train_command(args, run, cell, steps, batch_size, seed)
                if not call(command, log_path(args, run), f"train {run}"):
                    failures.append(run)
                    continue
            if not result_path(args, run).is_file():
                command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], f"--job={run}"]
                if not call(command, args.work / "logs" / f"{run}-bound.log", f"bound {run}"):
                    failures.append(f"{run} (bound)")

    lanes = [threading.Thread(target=lane) for _ in range(args.lanes)]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join()
    if failures:
        print(f"failed: {', '.join(failures)} (see {args.work / 'logs'})", flush=True)


def feature_classifier(args: argparse.Namespace) -> None:
    """bench_fid.py's Fashion-MNIST classifier, trained once into --work/fid."""
    fid_args = bench_fid.parse_args([f"--work={args.work / 'fid'}", f"--threads={max(args.threads, 1)}"])
    info = bench_fid.train_classifier(fid_args)
    print(f"Feature classifier: test accuracy {info['test_accuracy']:.4f}", flush=True)


def load_run(args: argparse.Namespace, run: str) -> dict | None:
    """A finished run's curve (images seen, FD), final FD, bounds and training time; None if unfinished."""
    metrics_path = args.work / run / "metrics.json"
    if not metrics_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text())
    batch_size = metrics["images_seen"] // max(metrics["steps"], 1)
    curve = [(int(step) * batch_size, float(fd)) for step, fd in FID_LINE.findall(log_path(args, run).read_text())]
    final = (metrics["images_seen"], metrics["frechet_distance"]["value"])  # the same seeds and steps as the curve
    curve = [point for point in curve if point[0] < final[0]] + [final]
    bounds = json.loads(result_path(args, run).read_text()) if result_path(args, run).is_file() else {}
    return {
        "curve": curve,
        "fd": metrics["frechet_distance"]["value"],
        "fd_samples": metrics["frechet_distance"]["num_samples"],
        "bounds": {variance: (b["bits_per_dim"], b["standard_error"]) for variance, b in bounds.items()},
        "group_means": {variance: b["group_means"] for variance, b in bounds.items()},
        "images_seen": metrics["images_seen"],
        "minutes": metrics["wall_time_s"] / 60,
    }


def paired_difference(result: dict, reference: dict, variance: str) -> str:
    """'mean +- standard error' of the group-by-group difference of two runs' bounds with `variance` ('-' where
    either lacks it): the groups see the same images, timesteps and noise (bench_quality.grouped_bound), so the
    difference is paired."""
    if variance not in result["group_means"] or variance not in reference["group_means"]:
        return "-"
    pairs = zip(result["group_means"][variance], reference["group_means"][variance], strict=True)
    return bench_quality.mean_and_error([a - b for a, b in pairs], "+")


def by_seed(values: list[str]) -> str:
    """One entry per seed, 'a / b' where there are several."""
    return " / ".join(values) if values else "-"


def print_tables(args: argparse.Namespace) -> None:
    """One table per budget: each cell's final FD (mean over seeds, and each seed's), its bounds, the paired
    difference of its analytic-variance bound to --reference's trained with the same seed, and its cost; with
    several seeds, each column lists every seed's value (seed order), then the seed-to-seed spread of each cell.
    A variant (another learning rate, warmup or EMA) pairs each cell with the same cell at the grid's settings."""
    total_minutes, tag = 0.0, settings_tag(args)
    for steps, batch_size in BUDGETS[args.stage]:
        seeds = SEEDS[args.stage]
        print(
            f"\n{steps} x {batch_size} images, seeds {', '.join(map(str, seeds))}, FD of {args.fid_samples} "
            f"samples at 100 DDPM steps (lower is better){f'; variant {tag}' if tag else ''}"
        )
        reference_name = "the same cell's at the grid's settings" if tag else f"{args.reference}'s"
        print(
            "| recipe | FD | FD by seed | bits/dim, trained variance | bits/dim, analytic variance "
            f"| analytic bound minus {reference_name} (paired, same seed) | minutes |"
        )
        print("|---|---|---|---|---|---|---|")
        rows, spreads = [], []
        references = {seed: load_run(args, run_name(args.reference, steps, batch_size, seed)) for seed in seeds}
        for cell in args.cells:
            results = {seed: load_run(args, run_name(cell, steps, batch_size, seed, tag)) for seed in seeds}
            results = {seed: r for seed, r in results.items() if r is not None}
            if not results:
                continue
            fds = [r["fd"] for r in results.values()]
            minutes = [r["minutes"] for r in results.values()]
            total_minutes += sum(minutes)
            trained, analytic, paired = [], [], []
            for seed, result in results.items():  # "-" where a seed lacks a value, so columns stay aligned
                bounds = result["bounds"]
                trained_bound = next((b for variance, b in bounds.items() if variance != "analytic"), None)
                for column, bound in ((trained, trained_bound), (analytic, bounds.get("analytic"))):
                    column.append("-" if bound is None else f"{bound[0]:.3f} +- {bound[1]:.3f}")
                if tag or cell != args.reference:
                    reference = load_run(args, run_name(cell, steps, batch_size, seed)) if tag else references[seed]
                    paired.append("-" if reference is None else paired_difference(result, reference, "analytic"))
            if len(results) > 1:
                spreads.append((cell, max(fds) - min(fds), results))
            mean_fd = sum(fds) / len(fds)
            row = [cell, f"{mean_fd:.1f}", by_seed([f"{fd:.1f}" for fd in fds]), by_seed(trained)]
            row += [by_seed(analytic), by_seed(paired), by_seed([f"{m:.0f}" for m in minutes])]
            rows.append((mean_fd, row))
        for _, row in sorted(rows, key=lambda item: item[0]):
            print("| " + " | ".join(row) + " |")
        for cell, fd_range, results in spreads:
            (seed_a, a), (seed_b, b) = list(results.items())[:2]
            bounds = ", ".join(
                f"{variance} {paired_difference(a, b, variance)}"
                for variance in sorted(a["bounds"].keys() & b["bounds"].keys())
            )
            print(
                f"Seed spread of {cell}: FD range {fd_range:.1f}; bits/dim seed {seed_a} minus seed {seed_b}: "
                f"{bounds or '-'} (paired: the same test images and noise)"
            )
    print(f"\nTraining time of the finished runs: {total_minutes:.0f} minutes (wall clock per run, summed)")


def plot_folder(args: argparse.Namespace) -> Path:
    """benchmarks/ for the plots of real budgets; --work for a smoke test's (a budget under the screen's), which
    stays out of the repository."""
    small = any(steps * batch_size < BUDGET_IMAGES_SCREEN for steps, batch_size in BUDGETS[args.stage])
    return args.work if small else BENCHMARKS


def earlier_plot(path: Path, steps: int, batch_size: int) -> dict:
    """The data of the plot at `path` as last drawn (its JSON; empty if none, or if drawn for another budget): the
    cells measured by earlier sessions, whose run folders this checkout may not hold, stay in the plot; a cell
    on disk replaces its earlier values."""
    spec_path = path.with_suffix(".json")
    if not spec_path.is_file():
        return {}
    spec = json.loads(spec_path.read_text())
    return spec if f"{steps} x {batch_size} images" in spec["title"] else {}


def draw_curve(args: argparse.Namespace) -> None:
    """FD against images seen at the stage's largest budget, seed 0: every finished cell on disk, whatever
    --cells names, and the cells of the plot as last drawn (a run of a few cells redraws the whole plot), with Ho et
    al.'s recipe's final FD as a dashed line (the level another recipe should reach with fewer images)."""
    steps, batch_size = BUDGETS[args.stage][-1]
    path = plot_folder(args) / f"recipe_fd_{args.stage}.png"
    earlier = earlier_plot(path, steps, batch_size)
    curves = {cell: [tuple(point) for point in curve] for cell, curve in earlier.get("series", {}).items()}
    reference = earlier.get("reference")
    for cell in all_cells():
        result = load_run(args, run_name(cell, steps, batch_size, 0))
        if result is not None:
            curves[cell] = result["curve"]
            if cell == DEFAULT_CELL:
                reference = (result["fd"], f"{DEFAULT_CELL}, final")
    if all(len(curve) < 2 for curve in curves.values()):
        return  # --fid-points 1: one point per run, no curve
    line_plot(
        path,
        curves,
        title=f"Frechet distance during training, {steps} x {batch_size} images (seed 0)",
        x_label="images seen",
        y_label=f"Frechet distance ({args.fid_samples} samples, 100 DDPM steps)",
        reference=None if reference is None else tuple(reference),
        log_x=False,
    )


def draw_tradeoff(args: argparse.Namespace) -> None:
    """Each finished cell's FD against its held-out bound (the analytic variance's where measured, the better of
    the two for x- and v-prediction) at the stage's first budget, seed 0, whatever --cells names, with the cells
    of the plot as last drawn."""
    steps, batch_size = BUDGETS[args.stage][0]
    path = plot_folder(args) / f"recipe_tradeoff_{args.stage}.png"
    points = {cell: tuple(point) for cell, point in earlier_plot(path, steps, batch_size).get("points", {}).items()}
    for cell in all_cells():
        result = load_run(args, run_name(cell, steps, batch_size, 0))
        if result is not None and result["bounds"]:
            points[cell] = (min(bits for bits, _ in result["bounds"].values()), result["fd"])
    scatter_plot(
        path,
        points,
        title=f"Samples against likelihood, {steps} x {batch_size} images (seed 0)",
        x_label="held-out bits/dim (the lower of trained and analytic variance)",
        y_label=f"Frechet distance ({args.fid_samples} samples, 100 DDPM steps)",
        highlight=[DEFAULT_CELL, BALANCED_CELL],
        log_x=True,
        styles={cell: cell_style(cell) for cell in points},
        legends=[
            ("prediction", [(name, {"color": colour, "marker": "o"}) for name, colour in PREDICTION_COLOURS.items()]),
            ("betas", [(name, {"color": "grey", "marker": marker}) for name, marker in SCHEDULE_MARKERS.items()]),
            (
                "loss weighting",
                [
                    (name, {"color": "grey", "marker": "o", "fillstyle": fill})
                    for name, fill in WEIGHTING_FILLS.items()
                ],
            ),
        ],
    )


# The tradeoff plot's styles: colour by prediction type, marker by schedule, fill by weighting; a log-normal
# timestep cell is labelled with its name.
PREDICTION_COLOURS = {"epsilon": "tab:blue", "sample": "tab:orange", "v_prediction": "tab:green"}
SCHEDULE_MARKERS = {"linear": "o", "cosine": "s", "sigmoid": "^"}
WEIGHTING_FILLS = {"simple": "full", "min_snr": "none", "p2": "left"}


def cell_style(cell: str) -> dict:
    prediction_type, weighting, schedule, sampling = parse_cell(cell)
    return {
        "color": PREDICTION_COLOURS[prediction_type],
        "marker": SCHEDULE_MARKERS[schedule],
        "fillstyle": WEIGHTING_FILLS[weighting],
        "label": sampling != "uniform",
    }


def main() -> None:
    args = parse_args()
    if args.job:
        torch.set_num_threads(args.threads)
        result = bound_job(args, args.job)
        result_path(args, args.job).parent.mkdir(parents=True, exist_ok=True)
        result_path(args, args.job).write_text(json.dumps(result, indent=2))
        return
    if not args.table:
        if not (bench_quality.DATASET / "dataset_dict.json").is_file():
            raise SystemExit(f"error: no Fashion-MNIST at {bench_quality.DATASET}; run benchmarks/fashion_mnist.py")
        feature_classifier(args)
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        run_jobs(args)
    print_tables(args)
    if not settings_tag(args):  # the plots draw the grid at its settings; a variant is in its table
        draw_curve(args)
        draw_tradeoff(args)


if __name__ == "__main__":
    main()
