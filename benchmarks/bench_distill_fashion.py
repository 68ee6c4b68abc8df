"""Progressive distillation of the recipe screen's Fashion-MNIST teachers to 8, 4, 2 and 1 steps.

    python benchmarks/fashion_mnist.py && python benchmarks/bench_recipe.py --stage screen --fid-points 1 \
      --analytic-images 20 --cells epsilon-simple-linear v_prediction-simple-linear     # the two teachers
    python benchmarks/bench_distill_fashion.py            # distils what is missing, measures, prints, plots
    python benchmarks/bench_distill_fashion.py --table    # the table and plot again, from the results on disk

Issue 25's benchmark on the screen's teachers (tiny UNet, 600 x 32 Fashion-MNIST images, seed 0): Ho et al.'s
epsilon recipe and v-prediction, the same budget. Chains ("eps", "v": from 16 trailing DDIM steps; "v64": the v
teacher from 64) run as `training/distill.py` commands, 16 -> 8 (or 64 -> 8 in three rounds), then 8 -> 4, 4 -> 2,
2 -> 1, each command's student the next one's teacher, 300 updates of 32 images per round ("v64x50": 50, so that
the whole distillation costs less than the teacher's training). Then this script
measures every row with the same 1,000 seeds (image i from seed i, so every row starts from the same x_T),
bench_fid's Fashion-MNIST classifier features and the 10,000 test images as reference: the teacher's DDIM (eta 0,
trailing) at the chain's start and at 8, 4, 2, 1 steps, its DDPM (eta 1, trailing) at 8, 4, 2, 1, each student,
and the RMS pixel distance (in [-1, 1]) of each student's images to the teacher's DDIM images at the chain's start
(what the chain imitates) and at the student's steps. The teacher's best sampler is its 100-step DDPM, measured
by the screen (the same seeds and features; a 1,000-step row costs 1,000,000 network calls, about 3 CPU-hours
here).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(REPO))

import bench_quality  # noqa: E402

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler  # noqa: E402
from simple_ddpm.distillation import paired_distance  # noqa: E402
from simple_ddpm.frechet import frechet_distance  # noqa: E402
from simple_ddpm.image_processing import image_grid  # noqa: E402
from simple_ddpm.sample_quality import pixel_statistics  # noqa: E402
from simple_ddpm.sampling import generate_images  # noqa: E402
from training.frechet_eval import FrechetEvaluation  # noqa: E402

RECIPE_WORK = BENCHMARKS / "_work" / "recipe"
WORK = BENCHMARKS / "_work" / "distill_fashion"
# chain name -> (the screen's teacher run, the distill.py commands as (teacher steps, student steps)); each
# command's student is the next one's teacher. "v64" starts from a 4x longer DDIM chain of the v teacher.
CHAINS = {
    "eps": ("epsilon-simple-linear-600x32-seed0", [(16, 8), (8, 4), (4, 2), (2, 1)]),
    "v": ("v_prediction-simple-linear-600x32-seed0", [(16, 8), (8, 4), (4, 2), (2, 1)]),
    "v64": ("v_prediction-simple-linear-600x32-seed0", [(64, 8), (8, 4), (4, 2), (2, 1)]),
    # the same with 50 updates per round: the six rounds together cost less than the teacher's training
    "v64x50": ("v_prediction-simple-linear-600x32-seed0", [(64, 8), (8, 4), (4, 2), (2, 1)], 50),
}
STUDENT_STEPS = (8, 4, 2, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", nargs="+", choices=list(CHAINS), default=list(CHAINS))
    parser.add_argument("--updates-per-round", type=int, default=300, help="of chains that do not set their own")
    parser.add_argument("--batch-size", type=int, default=32, help="images per distillation update")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per Frechet-distance row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--table", action="store_true", help="print the table and draw the plot from disk only")
    return parser.parse_args(argv)


def student_folder(chain: str, steps: int) -> Path:
    """The folder of the chain's student of `steps` steps (the output of the command that ends there)."""
    start = dict((student, teacher) for teacher, student in CHAINS[chain][1])[steps]
    return WORK / f"{chain}-{start}to{steps}"


def first_steps(chain: str) -> int:
    return CHAINS[chain][1][0][0]


def distil_chain(args, chain: str) -> None:
    """One distill.py command per entry of the chain, each skipped when its folder is finished; `measure` takes
    the Frechet distances."""
    source = RECIPE_WORK / CHAINS[chain][0]
    updates = CHAINS[chain][2] if len(CHAINS[chain]) > 2 else args.updates_per_round
    for steps, student_steps in CHAINS[chain][1]:
        out = student_folder(chain, student_steps)
        if not (out / "metrics.json").is_file():
            command = [
                sys.executable, str(REPO / "training" / "distill.py"), "--teacher", str(source),
                "--output_dir", str(out), "--teacher_steps", str(steps), "--num_inference_steps",
                str(student_steps), "--max_train_steps_per_round", str(updates),
                "--train_batch_size", str(args.batch_size), "--eval_split", "test", "--num_eval_images", "10000",
                "--report_to", "none",
            ]  # fmt: skip
            env = bench_quality.job_environment(REPO, args.threads)
            print(f"{time.strftime('%H:%M:%S')} distil {out.name}", flush=True)
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        source = out


def load(path: Path, **scheduler_options) -> SimpleDDPMPipeline:
    pipe = SimpleDDPMPipeline.from_pretrained(path)
    if scheduler_options:
        pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, **scheduler_options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def measure(args, chain: str) -> dict:
    """Every row of one chain's table (kept on disk as measured): the teacher's rows (shared by the chains of one
    teacher), each student's FD and its paired distances."""
    run = CHAINS[chain][0]
    teacher_path, path = WORK / f"{run}-rows.json", WORK / f"{chain}-rows.json"
    teacher_rows = json.loads(teacher_path.read_text()) if teacher_path.is_file() else {}
    rows = json.loads(path.read_text()) if path.is_file() else {}
    held_out = ((bench_quality.test_images(10_000) + 1) * 127.5).round().to(torch.uint8)
    fid = FrechetEvaluation.load(
        str(RECIPE_WORK / "fid" / "classifier.safetensors"), held_out, "cpu",
        num_samples=args.num_samples, num_inference_steps=16, batch_size=250, seed=0,
    )  # fmt: skip
    ddim = load(RECIPE_WORK / run, timestep_spacing="trailing")
    cache: dict[str, torch.Tensor] = {}

    def images(name: str, pipe: SimpleDDPMPipeline, steps: int, eta: float | None, table: dict, file: Path):
        if name not in cache:
            start = time.process_time()
            cache[name] = generate_images(
                pipe, args.num_samples, batch_size=250, seed=0, num_inference_steps=steps, eta=eta, progress=False
            ).float()
            if name not in table:
                pixels = (cache[name] * 255).round().to(torch.uint8)
                statistics = pixel_statistics(fid.extractor, pixels, batch_size=250, progress=False)
                table[name] = {"steps": steps, "frechet": frechet_distance(statistics, fid.reference),
                               "process_cpu_s": time.process_time() - start}  # fmt: skip
                file.write_text(json.dumps(table, indent=2))
                print(f"{chain} {name}: {json.dumps(table[name])}", flush=True)
        return cache[name]

    def teacher(name: str, steps: int, eta: float) -> torch.Tensor:
        return images(name, ddim, steps, eta, teacher_rows, teacher_path)

    start = first_steps(chain)
    for steps in (start, *STUDENT_STEPS):
        teacher(f"ddim-{steps}", steps, 0.0)
    for steps in STUDENT_STEPS:
        if f"ddpm-{steps}" not in teacher_rows:
            teacher(f"ddpm-{steps}", steps, 1.0)
    grid_rows = [teacher(f"ddim-{start}", start, 0.0)[:16]]
    for steps in STUDENT_STEPS:
        name = f"student-{steps}"
        student = images(name, load(student_folder(chain, steps)), steps, None, rows, path)
        if "paired_rms_to_teacher_ddim_start" not in rows[name]:
            rows[name] |= {
                "paired_rms_to_teacher_ddim_start": paired_distance(
                    student * 2, teacher(f"ddim-{start}", start, 0.0) * 2
                ),
                "paired_rms_to_teacher_ddim_same_steps": paired_distance(
                    student * 2, teacher(f"ddim-{steps}", steps, 0.0) * 2
                ),
            }
            path.write_text(json.dumps(rows, indent=2))
        grid_rows += [student[:16], teacher(f"ddim-{steps}", steps, 0.0)[:16]]
    image_grid(torch.cat(grid_rows), cols=16).save(BENCHMARKS / f"distill_fashion_{chain}_samples.png")
    return rows


def costs(chain: str) -> list[dict]:
    """Each round's updates and CPU seconds (the distill.py process, one thread), as its metrics.json records."""
    rounds = []
    for _, student_steps in CHAINS[chain][1]:
        rounds += json.loads((student_folder(chain, student_steps) / "metrics.json").read_text())["distillation"][
            "rounds"
        ]
    return rounds


def print_table(args) -> None:
    for chain in args.chains:
        run, start = CHAINS[chain][0], first_steps(chain)
        teacher_rows = json.loads((WORK / f"{run}-rows.json").read_text())
        rows = teacher_rows | json.loads((WORK / f"{chain}-rows.json").read_text())
        best = json.loads((RECIPE_WORK / run / "metrics.json").read_text())["frechet_distance"]["value"]
        print(f"\n{chain}: {run} distilled from its {start}-step DDIM chain; FD of {args.num_samples} samples "
              f"(seeds 0-{args.num_samples - 1}); the teacher's 100-step DDPM {best:.1f}")  # fmt: skip
        print(f"| steps | student FD | vs DDPM-100 | teacher DDIM FD | teacher DDPM FD | RMS to DDIM-{start} "
              "| RMS to DDIM same |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for steps in STUDENT_STEPS:
            student = rows[f"student-{steps}"]
            print(
                f"| {steps} | {student['frechet']:.1f} | {100 * (student['frechet'] / best - 1):+.0f}% | "
                f"{rows[f'ddim-{steps}']['frechet']:.1f} | {rows[f'ddpm-{steps}']['frechet']:.1f} | "
                f"{student['paired_rms_to_teacher_ddim_start']:.3f} | "
                f"{student['paired_rms_to_teacher_ddim_same_steps']:.3f} |"
            )
        print(f"| {start} (teacher) | - | - | {rows[f'ddim-{start}']['frechet']:.1f} | - | 0 | - |")
        rounds = costs(chain)
        total = sum(r["process_cpu_s"] for r in rounds) / 60
        print("rounds: " + "; ".join(f"{r['teacher_steps']} -> {r['student_steps']}: {r['updates']} updates, "
                                     f"{r['process_cpu_s'] / 60:.1f} CPU-min" for r in rounds))  # fmt: skip
        print(f"whole distillation: {total:.1f} CPU-minutes")


def draw_plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    teachers = list(dict.fromkeys(CHAINS[chain][0] for chain in args.chains))
    figure, axes = plt.subplots(1, len(teachers), figsize=(5.5 * len(teachers), 4), squeeze=False)
    for axis, run in zip(axes[0], teachers, strict=True):
        teacher_rows = json.loads((WORK / f"{run}-rows.json").read_text())
        best = json.loads((RECIPE_WORK / run / "metrics.json").read_text())["frechet_distance"]["value"]
        steps = list(STUDENT_STEPS)
        for chain in (c for c in args.chains if CHAINS[c][0] == run):
            rows = json.loads((WORK / f"{chain}-rows.json").read_text())
            updates = CHAINS[chain][2] if len(CHAINS[chain]) > 2 else args.updates_per_round
            axis.plot(steps, [rows[f"student-{n}"]["frechet"] for n in steps], "o-",
                      label=f"student from {first_steps(chain)} DDIM steps, {updates} updates/round")  # fmt: skip
        ddim_steps = sorted((n for n in (1, 2, 4, 8, 16, 64) if f"ddim-{n}" in teacher_rows), reverse=True)
        axis.plot(ddim_steps, [teacher_rows[f"ddim-{n}"]["frechet"] for n in ddim_steps], "s--", label="teacher DDIM")
        axis.plot(steps, [teacher_rows[f"ddpm-{n}"]["frechet"] for n in steps], "^:", label="teacher DDPM")
        axis.axhline(best, color="k", lw=0.8, label="teacher DDPM, 100 steps")
        axis.set(xscale="log", yscale="log", xlabel="sampling steps (network calls)", ylabel="Frechet distance",
                 title=run)  # fmt: skip
        axis.set_xticks(ddim_steps, labels=[str(n) for n in ddim_steps])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        axis.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        axis.legend(fontsize=8)
    figure.suptitle(f"Progressive distillation on Fashion-MNIST, {args.num_samples} samples per point")
    figure.tight_layout()
    figure.savefig(BENCHMARKS / "distill_fashion_fd.png", dpi=120)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for chain in args.chains:
            if not (RECIPE_WORK / CHAINS[chain][0] / "metrics.json").is_file():
                raise SystemExit(f"error: no teacher {CHAINS[chain][0]}; train it with bench_recipe.py (see above)")
            distil_chain(args, chain)
            measure(args, chain)
    print_table(args)
    draw_plot(args)


if __name__ == "__main__":
    main()
