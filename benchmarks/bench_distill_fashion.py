"""Progressive distillation of the recipe screen's Fashion-MNIST teachers to 8, 4, 2 and 1 steps.

    python benchmarks/fashion_mnist.py && python benchmarks/bench_recipe.py --stage screen --fid-points 1 \
      --analytic-images 20 --cells epsilon-simple-linear v_prediction-simple-linear     # the two teachers
    python benchmarks/bench_distill_fashion.py            # distils what is missing, measures, prints, plots
    python benchmarks/bench_distill_fashion.py --table    # the table and plot again, from the results on disk

Issue 25's benchmark on the screen's teachers (tiny UNet, 600 x 32 Fashion-MNIST images, seed 0): Ho et al.'s
epsilon recipe and v-prediction, the same budget. For each, `training/distill.py` runs one round per command,
16 -> 8 -> 4 -> 2 -> 1 trailing DDIM steps (each round's student is the next round's teacher, so every student is a
pipeline folder and distill.py measures its own Frechet distance), 300 updates of 32 images per round. Then this
script measures every row with the same 1,000 seeds (image i from seed i, so every row starts from the same x_T),
bench_fid's Fashion-MNIST classifier features and the 10,000 test images as reference: the teacher's DDIM (eta 0,
trailing) at 16, 8, 4, 2, 1 steps, its DDPM (eta 1, trailing) at 8, 4, 2, 1, each student, and the RMS pixel
distance (in [-1, 1]) of each student's images to the teacher's 16-step DDIM images (what the chain imitates) and
to its DDIM at the student's steps. The teacher's best sampler is its 100-step DDPM, measured by the screen
(the same seeds and features; a 1,000-step row costs 1,000,000 network calls, about 3 CPU-hours here).
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
TEACHERS = {  # short name -> the screen's run
    "eps": "epsilon-simple-linear-600x32-seed0",
    "v": "v_prediction-simple-linear-600x32-seed0",
}
FIRST_CHAIN = 16
STUDENT_STEPS = (8, 4, 2, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teachers", nargs="+", choices=list(TEACHERS), default=list(TEACHERS))
    parser.add_argument("--updates-per-round", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32, help="images per distillation update")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per Frechet-distance row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--table", action="store_true", help="print the table and draw the plot from disk only")
    return parser.parse_args(argv)


def round_folder(teacher: str, steps: int) -> Path:
    return WORK / f"{teacher}-{steps}to{steps // 2}"


def distil_chain(args, teacher: str) -> None:
    """One distill.py command per round, 16 -> 8 -> 4 -> 2 -> 1, each skipped when its folder is finished."""
    source, steps = RECIPE_WORK / TEACHERS[teacher], FIRST_CHAIN
    while steps > 1:
        out = round_folder(teacher, steps)
        if not (out / "metrics.json").is_file():
            command = [
                sys.executable, str(REPO / "training" / "distill.py"), "--teacher", str(source),
                "--output_dir", str(out), "--teacher_steps", str(steps), "--num_inference_steps", str(steps // 2),
                "--max_train_steps_per_round", str(args.updates_per_round), "--train_batch_size",
                str(args.batch_size), "--eval_split", "test", "--num_eval_images", "10000",
                "--fid_num_samples", str(args.num_samples),
                "--fid_features", str(RECIPE_WORK / "fid" / "classifier.safetensors"), "--report_to", "none",
            ]  # fmt: skip
            env = bench_quality.job_environment(REPO, args.threads)
            print(f"{time.strftime('%H:%M:%S')} distil {out.name}", flush=True)
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        source, steps = out, steps // 2


def load(path: Path, **scheduler_options) -> SimpleDDPMPipeline:
    pipe = SimpleDDPMPipeline.from_pretrained(path)
    if scheduler_options:
        pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, **scheduler_options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def measure(args, teacher: str) -> dict:
    """Every row of one teacher's table (kept on disk as measured): FD, and the students' paired distances."""
    path = WORK / f"{teacher}-rows.json"
    rows = json.loads(path.read_text()) if path.is_file() else {}
    held_out = ((bench_quality.test_images(10_000) + 1) * 127.5).round().to(torch.uint8)
    fid = FrechetEvaluation.load(
        str(RECIPE_WORK / "fid" / "classifier.safetensors"), held_out, "cpu",
        num_samples=args.num_samples, num_inference_steps=FIRST_CHAIN, batch_size=250, seed=0,
    )  # fmt: skip
    ddim = load(RECIPE_WORK / TEACHERS[teacher], timestep_spacing="trailing")
    cache: dict[str, torch.Tensor] = {}

    def images(name: str, pipe: SimpleDDPMPipeline, steps: int, eta: float | None) -> torch.Tensor:
        if name not in cache:
            start = time.process_time()
            cache[name] = generate_images(
                pipe, args.num_samples, batch_size=250, seed=0, num_inference_steps=steps, eta=eta, progress=False
            ).float()
            if name not in rows:
                pixels = (cache[name] * 255).round().to(torch.uint8)
                statistics = pixel_statistics(fid.extractor, pixels, batch_size=250, progress=False)
                rows[name] = {"steps": steps, "frechet": frechet_distance(statistics, fid.reference),
                              "process_cpu_s": time.process_time() - start}  # fmt: skip
                path.write_text(json.dumps(rows, indent=2))
                print(f"{teacher} {name}: {json.dumps(rows[name])}", flush=True)
        return cache[name]

    for steps in (FIRST_CHAIN, *STUDENT_STEPS):
        images(f"ddim-{steps}", ddim, steps, 0.0)
    for steps in STUDENT_STEPS:
        if f"ddpm-{steps}" not in rows:
            images(f"ddpm-{steps}", ddim, steps, 1.0)
    for steps in STUDENT_STEPS:
        name = f"student-{steps}"
        if name in rows and "paired_rms_to_teacher_ddim_16" in rows[name]:
            continue
        student = images(name, load(round_folder(teacher, steps * 2)), steps, None)
        rows[name] |= {
            "paired_rms_to_teacher_ddim_16": paired_distance(student * 2, images("ddim-16", ddim, 16, 0.0) * 2),
            "paired_rms_to_teacher_ddim_same_steps": paired_distance(
                student * 2, images(f"ddim-{steps}", ddim, steps, 0.0) * 2
            ),
        }
        path.write_text(json.dumps(rows, indent=2))
    grid_rows = [images("ddim-16", ddim, 16, 0.0)[:16]]
    for steps in STUDENT_STEPS:
        grid_rows += [images(f"student-{steps}", load(round_folder(teacher, steps * 2)), steps, None)[:16]]
        grid_rows += [images(f"ddim-{steps}", ddim, steps, 0.0)[:16]]
    image_grid(torch.cat(grid_rows), cols=16).save(BENCHMARKS / f"distill_fashion_{teacher}_samples.png")
    return rows


def costs(teacher: str) -> list[dict]:
    """Each round's updates and CPU seconds (the distill.py process, one thread), as its metrics.json records."""
    rounds = []
    for steps in (FIRST_CHAIN, *STUDENT_STEPS[:-1]):
        metrics = json.loads((round_folder(teacher, steps) / "metrics.json").read_text())["distillation"]
        rounds += metrics["rounds"]
    return rounds


def print_table(args) -> None:
    for teacher in args.teachers:
        rows = json.loads((WORK / f"{teacher}-rows.json").read_text())
        best = json.loads((RECIPE_WORK / TEACHERS[teacher] / "metrics.json").read_text())["frechet_distance"]["value"]
        print(f"\n{TEACHERS[teacher]}: FD of {args.num_samples} samples (seeds 0-{args.num_samples - 1}); the "
              f"teacher's 100-step DDPM {best:.1f}")  # fmt: skip
        print(
            "| steps | student FD | vs DDPM-100 | teacher DDIM FD | teacher DDPM FD | RMS to DDIM-16 "
            "| RMS to DDIM same |"
        )
        print("|---|---|---|---|---|---|---|")
        for steps in STUDENT_STEPS:
            student = rows[f"student-{steps}"]
            print(
                f"| {steps} | {student['frechet']:.1f} | {100 * (student['frechet'] / best - 1):+.0f}% | "
                f"{rows[f'ddim-{steps}']['frechet']:.1f} | {rows[f'ddpm-{steps}']['frechet']:.1f} | "
                f"{student['paired_rms_to_teacher_ddim_16']:.3f} | "
                f"{student['paired_rms_to_teacher_ddim_same_steps']:.3f} |"
            )
        print(f"| 16 (teacher) | - | - | {rows['ddim-16']['frechet']:.1f} | - | 0 | - |")
        rounds = costs(teacher)
        total = sum(r["process_cpu_s"] for r in rounds) / 60
        print("rounds: " + "; ".join(f"{r['teacher_steps']} -> {r['student_steps']}: {r['updates']} updates, "
                                     f"{r['process_cpu_s'] / 60:.1f} CPU-min" for r in rounds))  # fmt: skip
        print(f"whole distillation: {total:.1f} CPU-minutes")


def draw_plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(args.teachers), figsize=(5.5 * len(args.teachers), 4), squeeze=False)
    for axis, teacher in zip(axes[0], args.teachers, strict=True):
        rows = json.loads((WORK / f"{teacher}-rows.json").read_text())
        best = json.loads((RECIPE_WORK / TEACHERS[teacher] / "metrics.json").read_text())["frechet_distance"]["value"]
        steps = list(STUDENT_STEPS)
        axis.plot(steps, [rows[f"student-{n}"]["frechet"] for n in steps], "o-", label="distilled student")
        ddim_steps = [FIRST_CHAIN, *steps]
        axis.plot(ddim_steps, [rows[f"ddim-{n}"]["frechet"] for n in ddim_steps], "s--", label="teacher DDIM")
        axis.plot(steps, [rows[f"ddpm-{n}"]["frechet"] for n in steps], "^:", label="teacher DDPM")
        axis.axhline(best, color="k", lw=0.8, label="teacher DDPM, 100 steps")
        axis.set(xscale="log", yscale="log", xlabel="sampling steps (network calls)", ylabel="Frechet distance",
                 title=f"{TEACHERS[teacher]}")  # fmt: skip
        axis.set_xticks(ddim_steps, labels=[str(n) for n in ddim_steps])
        axis.legend(fontsize=8)
    figure.suptitle(f"Progressive distillation on Fashion-MNIST, {args.num_samples} samples per point")
    figure.tight_layout()
    figure.savefig(BENCHMARKS / "distill_fashion_fd.png", dpi=120)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for teacher in args.teachers:
            if not (RECIPE_WORK / TEACHERS[teacher] / "metrics.json").is_file():
                raise SystemExit(f"error: no teacher {TEACHERS[teacher]}; train it with bench_recipe.py (see above)")
            distil_chain(args, teacher)
            measure(args, teacher)
    print_table(args)
    draw_plot(args)


if __name__ == "__main__":
    main()
