"""Distil a trained SimpleDDPMPipeline into a few-step sampler: progressive distillation (Salimans & Ho 2022).

    accelerate launch training/distill.py --teacher outputs/simple-ddpm --num_inference_steps 4

The student starts from the teacher's weights and learns, round after round, to take in one deterministic DDIM
step what its teacher takes in two (simple_ddpm.distillation); after each round it becomes the teacher and the
chain halves, from --teacher_steps trailing timesteps down to --num_inference_steps. The output is an ordinary
pipeline folder whose scheduler config records the student's timesteps (`distilled_timesteps`), so that
`SimpleDDPMPipeline.from_pretrained(out)()` samples in its step count. Reads top to bottom: options, teacher,
accelerator, data, student, optimizer, the rounds, then the saved pipeline with its samples and model card.
docs/distillation.md says how to choose the options and what to expect.
"""

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python training/distill.py, accelerate launch): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.command_io import UsageError, open_pipeline
from simple_ddpm.cpu_threads import configure_cpu_threads
from simple_ddpm.distillation import distillation_chains, distillation_loss, teacher_x0
from simple_ddpm.float32_attention import use_float32_attention
from simple_ddpm.hub import resolve_token
from simple_ddpm.image_processing import image_grid, pixels_to_model_input
from simple_ddpm.model_card import METRICS_NAME, write_model_card
from simple_ddpm.scheduling_simple_ddpm import LEARNED_VARIANCE_TYPES
from training.arguments import (
    InvalidTrainingInput,
    add_checkpoint_arguments,
    add_data_arguments,
    add_hub_arguments,
    check_data_options,
    check_hub_options,
    check_mixed_precision,
    check_output_dir_writable,
    non_negative_int,
    positive_int,
)
from training.atomic_save import SaveRefused, remove_partial_saves, save_pipeline_atomically, save_state_atomically
from training.checkpoints import (
    TrainingProgress,
    check_compatible,
    checkpoint_dir,
    checkpoint_precision,
    checkpoint_training_state,
    load_checkpoint,
    prune_checkpoints,
    resolve_resume,
    write_unet_config,
)
from training.frechet_eval import FrechetEvaluation
from training.image_data import DIGITS_DATASET_ID, drop_class_labels, prepare_images, training_batches
from training.run_setup import (
    build_accelerator,
    choose_precision,
    connect_hub,
    end_processes,
    push_final,
    reported_as_one_line,
    sampling_pipeline,
    start_processes,
)
from training.stop_signals import TrainingInterrupted, stop_signals

logger = logging.getLogger("distill")

TEACHER_WEIGHTS_NAME = "teacher.safetensors"  # in a checkpoint: the weights of the current round's teacher
ROUNDS_NAME = "distillation_rounds.json"  # in a checkpoint: the records of the rounds finished so far
STUDENT_PREDICTION_TYPES = ("auto", "v_prediction", "sample", "epsilon")
FINAL_GRID_NAME = "samples.png"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Distil a SimpleDDPMPipeline into a few-step deterministic sampler (progressive distillation, "
        "Salimans & Ho 2022).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--teacher", required=True, help="The teacher: a pipeline folder or a Hub repo id.")
    parser.add_argument("--revision", help="The teacher's revision on the Hub.")
    parser.add_argument("--output_dir", default="outputs/simple-ddpm-distilled", help="Where the student goes.")
    parser.add_argument(
        "--num_inference_steps", type=positive_int, default=4, help="The student's steps: --teacher_steps halved."
    )
    parser.add_argument(
        "--teacher_steps",
        type=positive_int,
        default=64,
        help="The trailing chain of DDIM steps that the first round distils (a power of two times "
        "--num_inference_steps); each round halves it.",
    )
    parser.add_argument(
        "--student_prediction_type",
        choices=STUDENT_PREDICTION_TYPES,
        default="auto",
        help="What the student predicts; auto: v_prediction for an epsilon teacher (whose x = (z - sigma eps) / "
        "alpha explodes at t = T, where alpha is small), else the teacher's.",
    )
    parser.add_argument(
        "--guidance_scale",
        type=float,
        default=0.0,
        help="A class-conditional teacher: the first round's targets follow its classifier-free guided output with "
        "this w (Meng et al. 2023), so the student draws guided samples at guidance_scale 0. 0: the teacher as is.",
    )
    parser.add_argument(
        "--max_train_steps_per_round",
        type=positive_int,
        default=150,
        help="Updates per halving; the default distils the quickstart (docs/distillation.md), a larger model needs "
        "more (the paper: 50,000 for CIFAR-10).",
    )
    parser.add_argument(
        "--learning_rate", type=float, default=3e-4, help="Adam's learning rate, decayed to 0 within each round."
    )
    parser.add_argument("--train_batch_size", type=positive_int, default=128, help="Images per update per process.")
    parser.add_argument("--max_grad_norm", type=float, default=1.0, help="Clip the gradient norm; 0: no clipping.")
    parser.add_argument("--seed", type=int, default=0, help="Seeds data order, noise and the sample grid.")
    parser.add_argument(
        "--mixed_precision", choices=("auto", "no", "bf16", "fp16"), default="auto", help="As train.py's."
    )
    parser.add_argument("--report_to", choices=("tensorboard", "wandb", "none"), default="tensorboard")
    parser.add_argument("--logging_steps", type=positive_int, default=10, help="Log the loss every N updates.")
    parser.add_argument("--num_samples", type=positive_int, default=64, help="Images in the final sample grid.")
    parser.add_argument(
        "--save_rounds", action="store_true", help="Also save each round's student as OUTPUT_DIR/steps-<n>."
    )
    parser.add_argument(
        "--num_eval_images", type=non_negative_int, default=256, help="Held out from the data, as in train.py."
    )
    parser.add_argument(
        "--fid_num_samples",
        type=non_negative_int,
        default=0,
        help="At the end, the Frechet distance to the held-out images of this many samples of the student, and of "
        "its teacher's DDIM at --teacher_steps and at the student's steps (the same seeds): metrics.json and the "
        "card. 0: not measured.",
    )
    parser.add_argument(
        "--fid_features",
        default="inception",
        help="'inception' (FID; needs simple-ddpm[fid]) or a feature classifier .safetensors file, as train.py's.",
    )
    parser.add_argument("--eval_batch_size", type=positive_int, default=250, help="Images per sampling batch.")
    add_data_arguments(parser)
    add_checkpoint_arguments(parser)
    add_hub_arguments(
        parser,
        "Push the student to --hub_model_id: write access is checked before distilling, the pipeline with its card "
        "and metrics is pushed at the end.",
    )
    args = parser.parse_args(argv)
    # What train.py's shared setup reads.
    args.gradient_accumulation_steps, args.channels_last = 1, False
    try:
        check_data_options(args)
        check_hub_options(args)
        if args.fid_num_samples == 1:
            raise InvalidTrainingInput("--fid_num_samples must be 0 (none) or at least 2, got 1.")
        if not args.learning_rate > 0:
            raise InvalidTrainingInput(f"--learning_rate must be positive, got {args.learning_rate}.")
        if not (math.isfinite(args.guidance_scale) and args.guidance_scale >= 0):
            raise InvalidTrainingInput(f"--guidance_scale must be a finite number >= 0, got {args.guidance_scale}.")
        if args.guidance_scale and args.fid_num_samples:
            raise InvalidTrainingInput(
                "--fid_num_samples draws without labels, which a guided student was not taught; draw its samples "
                "with `simple-ddpm sample --class` and measure the folder with `simple-ddpm fid FOLDER REFERENCE`."
            )
        check_output_dir_writable(Path(args.output_dir))
    except InvalidTrainingInput as error:
        parser.error(str(error))
    return args


def load_teacher(args) -> tuple[SimpleDDPMPipeline, dict]:
    """The teacher pipeline and its metrics.json (empty without one); one line for what cannot be distilled."""
    try:
        teacher = open_pipeline(args.teacher, args.revision)
    except UsageError as error:
        raise InvalidTrainingInput(f"--teacher {error}") from None
    config = teacher.scheduler.config
    if not isinstance(teacher.scheduler, SimpleDDPMScheduler):
        raise InvalidTrainingInput(f"The teacher's scheduler is {type(teacher.scheduler).__name__}; it needs DDPM's.")
    if config.variance_type in LEARNED_VARIANCE_TYPES:
        raise InvalidTrainingInput(
            f"The teacher learns its variance ({config.variance_type}); distillation follows its deterministic DDIM "
            "path, which uses no variance, but the student's output channels would still hold one: not supported."
        )
    if args.guidance_scale and teacher.num_classes is None:
        raise InvalidTrainingInput(
            f"--guidance_scale {args.guidance_scale:g} guides a class-conditional teacher; this one has no classes."
        )
    if config.get("distilled_timesteps") is not None:
        chain = config.distilled_timesteps
        if args.teacher_steps != len(chain):
            raise InvalidTrainingInput(
                f"The teacher is a {len(chain)}-step distilled model; continue it with --teacher_steps {len(chain)}."
            )
    metrics_path = Path(args.teacher).expanduser() / METRICS_NAME
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return teacher, metrics


def root_training_metrics(metrics: dict) -> dict:
    """train.py's metrics of the model a chain of distillations started from: a distilled teacher's metrics.json
    keeps them under "teacher_training" (empty where the teacher had none)."""
    return (metrics.get("teacher_training") or {}) if "distillation" in metrics else metrics


def default_data(args, teacher: SimpleDDPMPipeline, metrics: dict) -> None:
    """Without data options, the teacher's data as its metrics.json names it (a Hub id or a saved folder: what
    train.py trained it on, or what a distilled teacher was distilled on), else the quickstart's digits;
    resolution, channels and class column as the teacher's."""
    setup = root_training_metrics(metrics).get("training", {})
    dataset = metrics.get("distillation", {}).get("dataset") or setup.get("dataset")
    if not (args.dataset_name or args.train_data_dir) and dataset not in (None, DIGITS_DATASET_ID):
        if "/" not in dataset and not Path(dataset).exists():
            raise InvalidTrainingInput(
                f"The teacher was trained on {dataset}, which is not a Hub id or a folder here; give "
                "--dataset_name or --train_data_dir."
            )
        args.dataset_name = dataset
    if args.class_column is None and teacher.num_classes is not None:
        args.class_column = setup.get("class_column") or "auto"
    args.class_dropout = setup.get("class_dropout") or 0.0
    size = teacher.unet.config.sample_size
    args.resolution = args.resolution or (size if isinstance(size, int) else None)
    args.num_channels = args.num_channels or teacher.unet.config.in_channels


def student_scheduler(teacher: SimpleDDPMScheduler, prediction_type: str, chain: list[int]) -> SimpleDDPMScheduler:
    """The teacher's noise schedule, the student's parameterisation and timesteps. x_hat is not clipped: the
    student's target x~ may leave [-1, 1] and still be the step that reproduces the teacher's two."""
    if prediction_type == "auto":
        prediction_type = (
            "v_prediction" if teacher.config.prediction_type == "epsilon" else teacher.config.prediction_type
        )
    return SimpleDDPMScheduler.from_config(
        teacher.config,
        prediction_type=prediction_type,
        clip_sample=False,
        thresholding=False,
        variance_type="fixed_small",  # DDIM at eta = 0 uses no variance; the teacher's analytic table is not ours
        analytic_mean_squared_eps=None,
        timestep_spacing="trailing",
        distilled_timesteps=chain,
    )


def save_checkpoint(
    accelerator: Accelerator, args, student, teacher: torch.nn.Module, step: int, rounds: list[dict]
) -> None:
    """train.py's checkpoint (weights, Adam, RNG, counters) plus the current round's teacher and the records of
    the rounds finished."""
    folder = checkpoint_dir(Path(args.output_dir), step)
    raw = accelerator.unwrap_model(student)

    def write_extra(partial: Path) -> None:
        write_unet_config(partial, raw.config)
        (partial / ROUNDS_NAME).write_text(json.dumps(rounds, indent=2))
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()}, partial / TEACHER_WEIGHTS_NAME
        )

    save_state_atomically(accelerator, folder, raw, write_extra)
    if accelerator.is_main_process:
        prune_checkpoints(Path(args.output_dir), args.checkpoints_total_limit)
    accelerator.wait_for_everyone()


def distil(args, accelerator, data, student, teacher_unet, optimizer, schedulers, chains, progress, rounds) -> None:
    """All rounds, from `progress.global_step` on. Round r's teacher is the student at the end of round r - 1
    (round 0's: the teacher pipeline's network); within a round the learning rate falls linearly to 0 and Adam
    starts afresh, as in the paper. The learning rate is a function of the step alone, so a resumed run has it."""
    per_round = args.max_train_steps_per_round
    total = per_round * (len(chains) - 1)
    batches = training_batches(data, args, accelerator.process_index, accelerator.num_processes, progress.global_step)
    null_label = None if data.class_names is None else len(data.class_names)
    student.train()
    round_start = (time.perf_counter(), time.process_time())
    with tqdm(
        total=total, initial=progress.global_step, desc="updates", disable=not accelerator.is_main_process
    ) as bar:
        while progress.global_step < total:
            round_index, step_in_round = divmod(progress.global_step, per_round)
            if step_in_round == 0:
                if round_index > 0:
                    teacher_unet.load_state_dict(accelerator.unwrap_model(student).state_dict())
                optimizer.state.clear()
            for group in optimizer.param_groups:
                group["lr"] = args.learning_rate * (1 - step_in_round / per_round)
            teacher_scheduler, clip = schedulers[min(round_index, 1)]
            # Guidance goes into the first round's targets; later teachers are students that learned it.
            guidance = args.guidance_scale if round_index == 0 else 0.0
            teacher = teacher_x0(teacher_unet, teacher_scheduler, clip, guidance, null_label)
            pixels, labels = next(batches)
            x0 = pixels_to_model_input(pixels.to(accelerator.device))
            if labels is not None:
                labels = drop_class_labels(labels.to(accelerator.device), args.class_dropout, null_label)
            with accelerator.autocast():
                loss = distillation_loss(student, teacher, schedulers[1][0], chains[round_index], x0, labels)
            if not torch.isfinite(loss):
                raise SaveRefused(f"error: the loss is {loss.item()} at update {progress.global_step + 1}; stopping.")
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(student.parameters(), args.max_grad_norm or math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            progress.global_step += 1
            progress.images_seen += args.train_batch_size * accelerator.num_processes
            step = progress.global_step
            bar.update(1)
            bar.set_postfix(round=f"{round_index + 1}/{len(chains) - 1}", loss=f"{loss.item():.4f}", refresh=False)
            if step % args.logging_steps == 0:
                accelerator.log({"distill/loss": loss.item(), "distill/round": round_index}, step=step)
            if step % per_round == 0:
                wall, cpu = time.perf_counter() - round_start[0], time.process_time() - round_start[1]
                rounds.append(
                    finish_round(args, accelerator, student, schedulers[1][0], chains, round_index, wall, cpu, data)
                )
                round_start = (time.perf_counter(), time.process_time())
            stop_signal = stop_signals.agreed_signal(accelerator)
            if (args.checkpointing_steps and step % args.checkpointing_steps == 0) or stop_signal:
                save_checkpoint(accelerator, args, student, teacher_unet, step, rounds)
            if stop_signal:
                raise TrainingInterrupted(stop_signal, step, checkpoint_dir(Path(args.output_dir), step))


def finish_round(args, accelerator, student, scheduler, chains, round_index, wall_s, cpu_s, data) -> dict:
    """The round's record (steps, updates, seconds: a resumed round counts its last session only) and, with
    --save_rounds, its student as OUTPUT_DIR/steps-<n>."""
    steps = len(chains[round_index + 1])
    if args.save_rounds and accelerator.is_main_process:
        chain_scheduler = SimpleDDPMScheduler.from_config(
            scheduler.config, distilled_timesteps=chains[round_index + 1]
        )
        pipe = sampling_pipeline(accelerator, student, None, chain_scheduler, data.class_names)
        pipe.save_pretrained(Path(args.output_dir) / f"steps-{steps}")
    logger.info("Round %d: %d -> %d steps in %.0f s", round_index + 1, len(chains[round_index]), steps, wall_s)
    return {
        "teacher_steps": len(chains[round_index]),
        "student_steps": steps,
        "updates": args.max_train_steps_per_round,
        "wall_time_s": wall_s,
        "process_cpu_s": cpu_s,
    }


def teacher_name(teacher: str) -> str:
    """How metrics.json and the card name the teacher: its Hub id, or a local folder's name (no local path in a
    card that may be pushed)."""
    return f"{Path(teacher).name} (a local folder)" if Path(teacher).expanduser().exists() else teacher


def frechet_distances(args, fid: FrechetEvaluation, student_pipe: SimpleDDPMPipeline, device) -> dict:
    """The student's Frechet distance and its teacher's, reloaded as it was before the rounds, with DDIM (eta 0,
    trailing timesteps: the path the student learned) at --teacher_steps and at the student's steps (the
    training-free sampler of equal cost); image i of every row starts from the same x_T."""
    steps = args.num_inference_steps
    result = fid.describe(fid(student_pipe, progress=True, num_inference_steps=steps), steps)
    result = {"student": result.pop("value"), **result, "teacher_ddim": {}}
    teacher = load_teacher(args)[0].to(device)
    teacher.set_progress_bar_config(disable=True)
    distilled = teacher.scheduler.config.get("distilled_timesteps") is not None
    if not distilled:
        teacher.scheduler = SimpleDDPMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing")
    for teacher_steps in [args.teacher_steps] + ([] if distilled else [steps]):
        distance = fid(teacher, progress=True, num_inference_steps=teacher_steps, eta=0.0)
        result["teacher_ddim"][str(teacher_steps)] = distance
    return result


def finish(
    args,
    accelerator,
    student,
    scheduler,
    data,
    progress,
    rounds,
    teacher_metrics,
    teacher_prediction_type,
    repo_id,
    fid: FrechetEvaluation | None,
) -> None:
    """Save the student pipeline, its sample grid (same seed as train.py's grids: image i of the teacher's grid
    starts from the same x_T), metrics.json and the model card, whose usage snippet loads `repo_id` (default: the
    folder)."""
    output_dir = Path(args.output_dir)
    pipe = sampling_pipeline(accelerator, student, None, scheduler, data.class_names)
    save_pipeline_atomically(pipe, output_dir)
    images = pipe(batch_size=args.num_samples, generator=torch.Generator().manual_seed(args.seed), output_type="pt")
    image_grid(images.images).save(output_dir / FINAL_GRID_NAME)
    metrics = {
        "distillation": {
            "teacher": teacher_name(args.teacher),
            "teacher_revision": args.revision,
            "teacher_steps": args.teacher_steps,
            "num_inference_steps": args.num_inference_steps,
            "timesteps": scheduler.config.distilled_timesteps,
            "prediction_type": scheduler.config.prediction_type,
            "teacher_prediction_type": teacher_prediction_type,
            "guidance_scale": args.guidance_scale,
            "updates_per_round": args.max_train_steps_per_round,
            "learning_rate": args.learning_rate,
            "train_batch_size": args.train_batch_size,
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
            "seed": args.seed,
            "rounds": rounds,
            "updates": progress.global_step,
            "images_seen": progress.images_seen,
            "wall_time_s": progress.wall_time_s(),
            "dataset": data.dataset_id,
            # a distilled teacher: how it was distilled (and, nested, how its teacher was)
            **({"continues": teacher_metrics["distillation"]} if "distillation" in teacher_metrics else {}),
        },
        "teacher_training": root_training_metrics(teacher_metrics),
        "sample_grid": FINAL_GRID_NAME,
        "num_samples": args.num_samples,
    }
    if fid is not None:
        metrics["frechet_distance"] = frechet_distances(args, fid, pipe, accelerator.device)
    (output_dir / METRICS_NAME).write_text(json.dumps(metrics, indent=2))
    write_model_card(output_dir, repo_id=repo_id)
    logger.info("Student of %d steps saved to %s", args.num_inference_steps, output_dir)


def main(argv: list[str] | None = None) -> None:
    progress = TrainingProgress()
    threads = configure_cpu_threads()
    args = parse_args(argv)
    hub_token = resolve_token(vars(args).pop("hub_token"))  # off `args`: never in a tracker, log or saved file
    processes = start_processes(threads)
    if processes.is_main_process:
        remove_partial_saves(Path(args.output_dir))

    with reported_as_one_line(processes):
        check_mixed_precision(choose_precision(args).precision, processes.device.type)
        teacher, teacher_metrics = load_teacher(args)
        try:
            chains = distillation_chains(args.teacher_steps, args.num_inference_steps, len(teacher.scheduler))
        except ValueError as error:
            raise InvalidTrainingInput(str(error)) from None
        default_data(args, teacher, teacher_metrics)
        with processes.main_process_first():
            data = prepare_images(args)
        if (teacher.num_classes is None) != (data.class_names is None):
            raise InvalidTrainingInput("The teacher's classes and the data's --class_column do not match.")
        fid = None
        if args.fid_num_samples:
            fid = FrechetEvaluation.load(
                args.fid_features,
                data.eval,
                processes.device,
                num_samples=args.fid_num_samples,
                num_inference_steps=args.num_inference_steps,
                batch_size=args.eval_batch_size,
                seed=args.seed,
            )
        student = use_float32_attention(UNet2DModel.from_config(teacher.unet.config))
        student.load_state_dict(teacher.unet.state_dict())
        resume_from = resolve_resume(args.resume_from_checkpoint, Path(args.output_dir))
        if resume_from is not None:
            check_compatible(resume_from, student.config, student.state_dict())
        uploader = connect_hub(args, processes, hub_token)
    batch_shape = (args.train_batch_size, data.channels, data.resolution, data.resolution)
    accelerator = build_accelerator(args, student.to(processes.device), batch_shape, checkpoint_precision(resume_from))
    progress.mixed_precision = accelerator.mixed_precision
    set_seed(args.seed, device_specific=True)
    scheduler = student_scheduler(teacher.scheduler, args.student_prediction_type, chains[-1])
    # Round 0's teacher samples as the teacher pipeline does (its parameterisation, clipped); later ones are students.
    schedulers = [(teacher.scheduler, teacher.scheduler.config.clip_sample), (scheduler, False)]
    teacher_unet = teacher.unet.to(accelerator.device).eval().requires_grad_(False)
    logger.info(
        "Distilling %s: %s steps, %d updates per round; student predicts %s",
        args.teacher, " -> ".join(str(len(chain)) for chain in chains), args.max_train_steps_per_round,
        scheduler.config.prediction_type,
    )  # fmt: skip

    rounds = []  # what each finished round cost
    checkpoint_training_state(accelerator, progress, None, [name for name, _ in student.named_parameters()])
    optimizer = torch.optim.Adam(student.parameters(), lr=args.learning_rate)
    student, optimizer = accelerator.prepare(student, optimizer)
    if resume_from is not None:
        with reported_as_one_line(accelerator):
            load_checkpoint(accelerator, resume_from)
        teacher_unet.load_state_dict(load_file(resume_from / TEACHER_WEIGHTS_NAME))  # copied onto its device
        rounds = json.loads((resume_from / ROUNDS_NAME).read_text())
        logger.info("Resumed from %s at update %d", resume_from, progress.global_step)
    if accelerator.is_main_process:
        accelerator.init_trackers("simple-ddpm-distill", config={k: str(v) for k, v in vars(args).items()})

    exit_status = 0
    try:
        with reported_as_one_line(accelerator), stop_signals.handling():
            distil(args, accelerator, data, student, teacher_unet, optimizer, schedulers, chains, progress, rounds)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            teacher_prediction_type = teacher.scheduler.config.prediction_type
            repo_id = uploader.repo_id if uploader else None
            finish(
                args, accelerator, student, scheduler, data, progress, rounds, teacher_metrics,
                teacher_prediction_type, repo_id, fid,
            )  # fmt: skip
            if uploader is not None and not push_final(Path(args.output_dir), uploader, hub_token, "distilled"):
                exit_status = 1
    except (SaveRefused, TrainingInterrupted) as error:
        if accelerator.is_main_process:
            print(error, file=sys.stderr)
        exit_status = error.exit_status
    del student, optimizer  # before the process group: see end_processes
    end_processes(accelerator, exit_status)


if __name__ == "__main__":
    main()
