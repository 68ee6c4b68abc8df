"""Progressive distillation on the quickstart's digits: students of 32 down to 1 step against their teacher.

    nice -n 15 python benchmarks/bench_distill.py          # trains what is missing, measures, prints, plots
    python benchmarks/bench_distill.py --table             # the table and plot again, from the results on disk

A reduced version of the issue's benchmark that fits a 2-core CPU: the teacher is the README's quickstart model as
it was trained when this ran (`python training/train.py --recipe ddpm`: tiny UNet, 8x8 digits, epsilon prediction,
2,000 steps of 128 images), trained here when missing, with its CPU time measured. Steps, each skipped when its
result exists under benchmarks/_work/distill:

1. curve: one round (the teacher's 8 trailing DDIM steps -> 4) run in-process with `simple_ddpm.distillation`'s
   loss, for a v-prediction and an epsilon-prediction student (both from the teacher's weights): the paired error
   of the student's 4 steps against the teacher's 8 (the same x_T) every few updates.
2. distil: `training/distill.py --teacher_steps 64 --num_inference_steps 1 --save_rounds`; every round's student
   is kept, and the CPU time of the whole run measured.
3. frechet: the Frechet distance (features of a FeatureClassifier fit here to the digits' labels, seeded) of
   --num-samples samples (image i from seed i, so every row starts from the same x_T) against all 1,797 digits:
   the teacher's DDPM at 1,000 steps, its DDPM and DDIM at the students' step counts and at 64, and each student;
   and the RMS pixel distance (in [-1, 1]) of each student's images to the teacher's 64-step DDIM images and to
   its own-step DDIM images from the same x_T. A floor row: --num-samples of the digits themselves.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel
from sklearn.datasets import load_digits

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.distillation import distillation_loss, paired_distance, teacher_x0, trailing_timesteps
from simple_ddpm.feature_networks import (
    ClassifierFeatures,
    FeatureClassifier,
    save_feature_classifier,
)
from simple_ddpm.frechet import frechet_distance
from simple_ddpm.image_processing import image_grid, pixels_to_model_input
from simple_ddpm.sample_quality import pixel_statistics
from simple_ddpm.sampling import generate_images

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
STUDENT_STEPS = (32, 16, 8, 4, 2, 1)
GRID_STEPS = (8, 4, 2, 1)
CURVE_CHECKPOINTS = (0, 25, 50, 100)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=BENCHMARKS / "_work" / "distill")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per Frechet-distance row")
    parser.add_argument("--teacher-steps", type=int, default=64, help="the chain the first round distils")
    parser.add_argument("--updates-per-round", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=128, help="images per distillation update")
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="of the curve and the distillation")
    parser.add_argument("--curve-samples", type=int, default=256, help="paired samples of the curve")
    parser.add_argument("--table", action="store_true", help="print the table and draw the plot from disk only")
    parser.add_argument(
        "--stage",
        choices=("all", "curve", "distil"),
        default="all",
        help="one stage alone (to run two at once)",
    )
    return parser.parse_args(argv)


def cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(command: list[str], result: Path) -> dict:
    """Run a training command once (skipped when `result` exists); its wall and CPU seconds, all threads."""
    if result.is_file():
        return json.loads(result.read_text())
    cpu, wall = cpu_seconds_of_children(), time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    measured = {
        "command": " ".join(command),
        "wall_s": time.perf_counter() - wall,
        "cpu_s": cpu_seconds_of_children() - cpu,
    }
    result.write_text(json.dumps(measured, indent=2))
    return measured


def train_teacher(args) -> dict:
    # The quickstart's training; its final evaluation cut to the 100-term bound and no analytic table, so that the
    # cost measured is the training's.
    command = [
        sys.executable, "training/train.py", "--recipe", "ddpm", "--output_dir", str(args.work / "teacher"),
        "--report_to", "none", "--final_eval_timesteps", "100", "--analytic_images", "0", "--sample_every", "0",
    ]  # fmt: skip
    return run_measured(command, args.work / "teacher_cost.json")


def digits_pixels() -> torch.Tensor:
    """All 1,797 digits as uint8 (N, 1, 8, 8), scaled to 0..255 as the training data are."""
    return torch.from_numpy(np.round(load_digits().images * (255 / 16)).astype(np.uint8))[:, None]


def feature_extractor(args) -> ClassifierFeatures:
    """A FeatureClassifier fit to the digits' labels (seeded, 30 epochs on the first 1,500, accuracy on the rest)."""
    path = args.work / "classifier.safetensors"
    if not path.is_file():
        pixels, labels = digits_pixels(), torch.from_numpy(load_digits().target)
        torch.manual_seed(0)
        model = FeatureClassifier(in_channels=1, image_size=8, num_classes=10, widths=[32, 64])
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        for _ in range(30):
            for batch in torch.randperm(1500).split(64):
                loss = torch.nn.functional.cross_entropy(model(pixels[batch].float() / 255), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(pixels[1500:].float() / 255).argmax(1) == labels[1500:]).float().mean().item()
        save_feature_classifier(model, path)
        (args.work / "classifier.json").write_text(json.dumps({"held_out_accuracy": accuracy}))
    return ClassifierFeatures(path)


def load(path: Path) -> SimpleDDPMPipeline:
    pipe = SimpleDDPMPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def samples(pipe: SimpleDDPMPipeline, count: int, steps: int, eta: float | None) -> torch.Tensor:
    """Images in [0, 1], image i from seed i."""
    return generate_images(
        pipe, count, batch_size=500, seed=0, num_inference_steps=steps, eta=eta, progress=False
    ).float()


def curve(args, lr: float, prediction_type: str) -> dict:
    """One round, 8 -> 4 steps, in-process: the paired RMS of the student's 4 DDIM steps to the teacher's 8."""
    path = args.work / "curve" / f"{prediction_type}-lr{lr:g}.json"
    if path.is_file():
        return json.loads(path.read_text())
    teacher = load(args.work / "teacher")
    chain = trailing_timesteps(8, len(teacher.scheduler))
    ddim = SimpleDDPMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing")
    reference = samples(SimpleDDPMPipeline(teacher.unet, ddim), args.curve_samples, 8, 0.0)
    scheduler = SimpleDDPMScheduler.from_config(
        teacher.scheduler.config, prediction_type=prediction_type, clip_sample=False, distilled_timesteps=chain[0::2]
    )
    student = UNet2DModel.from_config(teacher.unet.config)
    student.load_state_dict(teacher.unet.state_dict())
    student_pipe = SimpleDDPMPipeline(student, scheduler)
    student_pipe.set_progress_bar_config(disable=True)
    target = teacher_x0(teacher.unet.requires_grad_(False), teacher.scheduler, teacher.scheduler.config.clip_sample)
    data = pixels_to_model_input(digits_pixels())  # all digits: the teacher's training split and its held-out tenth
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    torch.manual_seed(0)
    points, losses, start = [], [], time.process_time()
    for update in range(max(CURVE_CHECKPOINTS) + 1):
        if update in CURVE_CHECKPOINTS:
            student.eval()
            with torch.no_grad():
                error = paired_distance(samples(student_pipe, args.curve_samples, 4, None) * 2, reference * 2)
            points.append({"updates": update, "paired_rms": error})
            student.train()
        if update == max(CURVE_CHECKPOINTS):
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * (1 - update / max(CURVE_CHECKPOINTS))
        x0 = data[torch.randint(0, len(data), (args.batch_size,))]
        loss = distillation_loss(student, target, scheduler, chain, x0, None)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    result = {
        "prediction_type": prediction_type,
        "learning_rate": lr,
        "points": points,
        "first_losses": losses[:5],
        "last_losses": losses[-5:],
        "process_cpu_s": time.process_time() - start,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def distil(args, lr: float) -> dict:
    command = [
        sys.executable, "training/distill.py", "--teacher", str(args.work / "teacher"),
        "--output_dir", str(args.work / "student"), "--teacher_steps", str(args.teacher_steps),
        "--num_inference_steps", "1", "--max_train_steps_per_round", str(args.updates_per_round),
        "--train_batch_size", str(args.batch_size), "--learning_rate", f"{lr:g}", "--save_rounds",
        "--report_to", "none", "--checkpointing_steps", "0",
    ]  # fmt: skip
    return run_measured(command, args.work / "student_cost.json")


def frechet_rows(args, extractor: ClassifierFeatures) -> list[dict]:
    """Every row of the table, each kept on disk once measured."""
    path = args.work / "frechet.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    done = {row["name"] for row in rows}
    reference = pixel_statistics(extractor, digits_pixels(), batch_size=500, progress=False)

    def distance(images: torch.Tensor) -> float:
        statistics = pixel_statistics(
            extractor, (images * 255).round().to(torch.uint8), batch_size=500, progress=False
        )
        return frechet_distance(statistics, reference)

    def add(name: str, **row) -> None:
        rows.append({"name": name, **row})
        path.write_text(json.dumps(rows, indent=2))
        print(json.dumps(rows[-1]))

    if "digits" not in done:
        subset = digits_pixels()[torch.randperm(1797, generator=torch.Generator().manual_seed(0))[: args.num_samples]]
        add("digits", kind="floor", steps=0, frechet=frechet_distance(
            pixel_statistics(extractor, subset, batch_size=500, progress=False), reference))  # fmt: skip
    teacher = load(args.work / "teacher")
    trailing = SimpleDDPMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing")
    ddim_pipe = SimpleDDPMPipeline(teacher.unet, trailing)
    ddim_pipe.set_progress_bar_config(disable=True)
    anchors = {}
    for steps in (args.teacher_steps, *GRID_STEPS):
        anchors[steps] = samples(ddim_pipe, args.num_samples, steps, 0.0)  # the pairs' references
        if f"ddim-{steps}" not in done:
            add(f"ddim-{steps}", kind="teacher DDIM (trailing)", steps=steps, frechet=distance(anchors[steps]))
    for steps in (1000, args.teacher_steps, *GRID_STEPS):
        if f"ddpm-{steps}" not in done:
            start = time.process_time()
            # One step of the default 'linspace' spacing would start at t = 0; from t = 999 it is DDIM's step.
            images = samples(teacher if steps > 1 else ddim_pipe, args.num_samples, steps, 1.0)
            add(f"ddpm-{steps}", kind="teacher DDPM", steps=steps, frechet=distance(images),
                process_cpu_s=time.process_time() - start)  # fmt: skip
    for steps in STUDENT_STEPS:
        if f"student-{steps}" in done:
            continue
        folder = args.work / "student" / f"steps-{steps}"
        images = samples(load(folder), args.num_samples, steps, None)
        pair = {"paired_rms_to_teacher_ddim_64": paired_distance(images * 2, anchors[args.teacher_steps] * 2)}
        if steps in anchors:
            pair["paired_rms_to_teacher_ddim_same_steps"] = paired_distance(images * 2, anchors[steps] * 2)
        add(f"student-{steps}", kind="student", steps=steps, frechet=distance(images), **pair)
    return rows


def write_grids(args) -> None:
    """Students and the teacher's DDIM at the same steps, 16 images from seeds 0..15 (the same x_T)."""
    teacher = load(args.work / "teacher")
    ddim_pipe = SimpleDDPMPipeline(
        teacher.unet, SimpleDDPMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing")
    )
    ddim_pipe.set_progress_bar_config(disable=True)
    rows = [samples(ddim_pipe, 16, args.teacher_steps, 0.0)]
    for steps in GRID_STEPS:
        rows += [samples(load(args.work / "student" / f"steps-{steps}"), 16, steps, None)]
        rows += [samples(ddim_pipe, 16, steps, 0.0)]
    image_grid(torch.cat(rows), cols=16).save(BENCHMARKS / "distill_samples.png")


def print_table(args) -> None:
    rows = {row["name"]: row for row in json.loads((args.work / "frechet.json").read_text())}
    teacher_cost = json.loads((args.work / "teacher_cost.json").read_text())
    student_cost = json.loads((args.work / "student_cost.json").read_text())
    metrics = json.loads((args.work / "student" / "metrics.json").read_text())["distillation"]
    best = rows["ddpm-1000"]["frechet"]
    print(f"\nFrechet distance to the 1,797 digits, {args.num_samples} samples per row (floor: "
          f"{rows['digits']['frechet']:.2f}); teacher DDPM 1,000 steps: {best:.2f}")  # fmt: skip
    print(
        "| steps | student FD | vs DDPM-1000 | teacher DDIM FD | teacher DDPM FD | RMS to DDIM-64 | RMS to DDIM same |"
    )
    print("|---|---|---|---|---|---|---|")

    def cell(name: str) -> str:
        return f"{rows[name]['frechet']:.2f}" if name in rows else "-"

    for steps in STUDENT_STEPS:
        student = rows[f"student-{steps}"]
        same = student.get("paired_rms_to_teacher_ddim_same_steps")
        print(
            f"| {steps} | {student['frechet']:.2f} | {100 * (student['frechet'] / best - 1):+.0f}% | "
            f"{cell(f'ddim-{steps}')} | {cell(f'ddpm-{steps}')} | {student['paired_rms_to_teacher_ddim_64']:.3f} | "
            f"{'-' if same is None else f'{same:.3f}'} |"
        )
    print(f"| {args.teacher_steps} (teacher) | - | - | {rows[f'ddim-{args.teacher_steps}']['frechet']:.2f} | "
          f"{rows[f'ddpm-{args.teacher_steps}']['frechet']:.2f} | 0 | 0 |")  # fmt: skip
    print(f"\nCost (CPU-core-minutes, all threads, getrusage): teacher training {teacher_cost['cpu_s'] / 60:.1f} "
          f"(wall {teacher_cost['wall_s'] / 60:.1f} min); distillation {student_cost['cpu_s'] / 60:.1f} (wall "
          f"{student_cost['wall_s'] / 60:.1f} min), {student_cost['cpu_s'] / teacher_cost['cpu_s']:.2f}x the "
          "teacher")  # fmt: skip
    for r in metrics["rounds"]:
        print(f"  round {r['teacher_steps']} -> {r['student_steps']}: {r['updates']} updates, "
              f"{r['process_cpu_s'] / 60:.2f} CPU-min, wall {r['wall_time_s'] / 60:.2f} min")  # fmt: skip
    for path in sorted((args.work / "curve").glob("*.json")):
        result = json.loads(path.read_text())
        points = ", ".join(f"{p['updates']}: {p['paired_rms']:.3f}" for p in result["points"])
        print(f"curve {result['prediction_type']} lr {result['learning_rate']:g}: paired RMS to the teacher's 8 "
              f"steps after {{updates: RMS}} {points}; last losses {np.mean(result['last_losses']):.3g}")  # fmt: skip


def draw_plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {row["name"]: row for row in json.loads((args.work / "frechet.json").read_text())}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = list(STUDENT_STEPS)
    left.plot(steps, [rows[f"student-{n}"]["frechet"] for n in steps], "o-", label="distilled student")
    teacher_steps = [args.teacher_steps, *GRID_STEPS]
    left.plot(teacher_steps, [rows[f"ddim-{n}"]["frechet"] for n in teacher_steps], "s--", label="teacher DDIM")
    left.plot(teacher_steps, [rows[f"ddpm-{n}"]["frechet"] for n in teacher_steps], "^:", label="teacher DDPM")
    left.axhline(rows["ddpm-1000"]["frechet"], color="k", lw=0.8, label="teacher DDPM, 1,000 steps")
    left.axhline(rows["digits"]["frechet"], color="grey", lw=0.8, ls="--", label="digits (floor)")
    left.set(xscale="log", yscale="log", xlabel="sampling steps (network calls)", ylabel="Frechet distance",
             title=f"Quickstart digits, {args.num_samples} samples per point")  # fmt: skip
    left.set_xticks(sorted(set(steps + teacher_steps)), labels=map(str, sorted(set(steps + teacher_steps))))
    left.legend(fontsize=8)
    for path in sorted((args.work / "curve").glob("*.json")):
        result = json.loads(path.read_text())
        points = result["points"]
        label = f"{result['prediction_type']}, lr {result['learning_rate']:g}"
        right.plot([p["updates"] for p in points], [p["paired_rms"] for p in points], "o-", label=label)
    right.set(yscale="log", xlabel="updates (batch 128)", ylabel="RMS to the teacher's 8 DDIM steps (same x_T)",
              title="First-round curve: 8 -> 4 steps")  # fmt: skip
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(BENCHMARKS / "distill_fd.png", dpi=120)


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.table:
        train_teacher(args)
        if args.stage in ("all", "curve"):
            for kind in ("v_prediction", "epsilon"):
                curve(args, args.learning_rate, kind)
        if args.stage in ("all", "distil"):
            distil(args, args.learning_rate)
        if args.stage != "all":
            return
        frechet_rows(args, feature_extractor(args))
        write_grids(args)
    print_table(args)
    draw_plot(args)


if __name__ == "__main__":
    main()
