"""Train a UNet2DModel with SimpleDDPMScheduler and save a SimpleDDPMPipeline (Ho et al. 2020, Algorithm 1).

    python training/train.py                                  # quickstart: 8x8 digits, minutes on a CPU
    accelerate launch training/train.py --dataset_name DATASET --model_preset small --output_dir outputs/run

Reads top to bottom: options, accelerator, data, model, optimizer, the loop, then the saved pipeline with its
samples, held-out bits/dim and model card. README.md documents every option.
"""

import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python training/train.py, accelerate launch): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.cpu_threads import configure_cpu_threads
from simple_ddpm.float32_attention import use_float32_attention
from simple_ddpm.hardware import (
    compile_unavailable_reason,
    fused_adamw_available,
)
from simple_ddpm.hub import BackgroundUploader, resolve_token
from simple_ddpm.image_processing import image_grid, pixels_to_model_input
from simple_ddpm.model_card import METRICS_NAME, write_model_card
from simple_ddpm.timestep_samplers import UniformSampler, create_timestep_sampler
from simple_ddpm.training_losses import diffusion_loss
from training.arguments import InvalidTrainingInput, check_mixed_precision, parse_args
from training.atomic_save import SaveRefused, remove_partial_saves, save_pipeline_atomically, save_state_atomically
from training.checkpoints import (
    TrainingProgress,
    check_compatible,
    check_training_state,
    checkpoint_dir,
    checkpoint_precision,
    checkpoint_training_state,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_resume,
    write_unet_config,
)
from training.final_stages import affordable_steps, final_grid_steps, final_stage
from training.frechet_eval import FrechetEvaluation
from training.image_data import (
    PreparedImages,
    batches_per_epoch,
    drop_class_labels,
    prepare_images,
    training_batches,
)
from training.recipes import recipe_departures
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
from training.unet_presets import build_unet, pretrained_unet_config

logger = logging.getLogger("train")

SAMPLES_DIR = "samples"
FINAL_GRID_NAME = "samples.png"
HUB_CHECKPOINT_DIR = "last-checkpoint"  # in the Hub repo: the newest training state, overwritten each time


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the run stops without writing another checkpoint."""

    exit_status = 1


def prepare_data(args, processes: PartialState) -> PreparedImages:
    """Decoded images, channels and resolution defaulting to the fine-tuned model's; the main process decodes
    first so that the others read `datasets`' cache."""
    if args.model_config_name_or_path is not None:
        config = pretrained_unet_config(args.model_config_name_or_path)
        sample_size = config.get("sample_size")
        args.num_channels = args.num_channels or config.get("in_channels")
        args.resolution = args.resolution or (sample_size if isinstance(sample_size, int) else None)
    with processes.main_process_first():
        data = prepare_images(args)
    count = len(data.train) if data.train is not None else "streamed"
    if data.class_names is not None:
        logger.info(
            "Class-conditional on column %r: %d classes (%s), label dropout %.2f",
            data.class_column,
            len(data.class_names),
            ", ".join(data.class_names[:10]) + (" ..." if len(data.class_names) > 10 else ""),
            args.class_dropout,
        )
    logger.info(
        "Data: %s, %s training and %d held-out images, %dx%d, %d channel(s)",
        data.dataset_id,
        count,
        len(data.eval),
        data.resolution,
        data.resolution,
        data.channels,
    )
    if (
        data.train is not None
        and batches_per_epoch(len(data.train), args.train_batch_size, processes.num_processes) == 0
    ):
        raise InvalidTrainingInput(
            f"{len(data.train)} training images do not fill one batch of {args.train_batch_size} x "
            f"{processes.num_processes} process(es); lower --train_batch_size."
        )
    return data


def total_train_steps(args, data: PreparedImages, num_processes: int) -> int:
    """Optimizer steps: --max_train_steps, or --num_epochs of full batches, whichever ends first."""
    steps = [args.max_train_steps] if args.max_train_steps else []
    if args.num_epochs and data.train is not None:
        per_epoch = batches_per_epoch(len(data.train), args.train_batch_size, num_processes)
        steps.append(max(1, args.num_epochs * per_epoch // args.gradient_accumulation_steps))
    return min(steps)


def build_scheduler(args) -> SimpleDDPMScheduler:
    return SimpleDDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
        variance_type=args.variance_type,
        clip_sample=True,
    )


def build_ema(args, unet: UNet2DModel, device: torch.device) -> EMAModel | None:
    """EMA of the weights with warmup: decay = min(max_decay, 1 - (1 + step / inv_gamma) ** -power)."""
    if not args.use_ema:
        return None
    ema = EMAModel(
        unet.parameters(),
        decay=args.ema_max_decay,
        use_ema_warmup=True,
        inv_gamma=args.ema_inv_gamma,
        power=args.ema_power,
        model_cls=UNet2DModel,
        model_config=unet.config,
        foreach=True,  # one fused update for all tensors: a third less EMA time on the tiny UNet
    )
    ema.to(device)
    return ema


def build_optimizer(args, unet: UNet2DModel, max_steps: int, num_processes: int, device: torch.device):
    fused = args.fused_adamw and fused_adamw_available(device.type)
    if args.fused_adamw and not fused:
        logger.warning("No fused AdamW for %s in this torch; using the foreach implementation.", device.type)
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
        fused=fused or None,
    )
    # accelerate steps a prepared lr scheduler once per process per optimizer step.
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=max_steps * num_processes,
    )
    return optimizer, lr_scheduler


def speed_up(args, unet: UNet2DModel, device: torch.device) -> UNet2DModel:
    """--channels_last and --torch_compile. Compiling is in place (`Module.compile`), so the weights' names, and
    with them checkpoints and the saved pipeline, stay those of the eager UNet; where inductor cannot build
    kernels the run goes on eagerly after one warning."""
    if args.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if args.torch_compile:
        reason = compile_unavailable_reason(device.type)
        if reason is not None:
            logger.warning("--torch_compile: %s; training eagerly.", reason)
        else:
            torch._dynamo.config.suppress_errors = True  # a graph inductor cannot build runs eagerly, with a warning
            unet.compile()
    return unet


def checkpoint_to_resume(args, unet: UNet2DModel) -> Path | None:
    folder = resolve_resume(args.resume_from_checkpoint, Path(args.output_dir))
    if folder is not None:
        check_compatible(folder, unet.config, unet.state_dict())
        check_training_state(folder, args.use_ema, args.timestep_sampling)
    return folder


def grid_class_labels(num_samples: int, num_classes: int) -> tuple[list[int], int]:
    """Labels for a grid of a class-conditional model with one row per class (the first `num_samples` of the
    classes when fewer), and its column count."""
    rows = min(num_samples, num_classes)
    cols = max(1, num_samples // rows)
    return [label for label in range(rows) for _ in range(cols)], cols


def write_samples(pipe: SimpleDDPMPipeline, args, path: Path, num_inference_steps: int) -> np.ndarray:
    """A grid of --num_samples images (the same seed every time, so grids over training compare) as a PNG; for a
    class-conditional model, one row per class, unguided."""
    labels, cols = (None, None) if pipe.num_classes is None else grid_class_labels(args.num_samples, pipe.num_classes)
    images = pipe(
        batch_size=args.num_samples if labels is None else len(labels),
        generator=torch.Generator().manual_seed(args.seed),
        num_inference_steps=num_inference_steps,
        output_type="pt",
        class_labels=labels,
    ).images
    grid = image_grid(images, cols=cols)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return np.asarray(grid.convert("RGB"))


def sampled_timesteps(num_timesteps: int | None, num_train_timesteps: int) -> int | None:
    """K for `pipe.elbo(num_timesteps=K)`: None (every term, the exact bound) unless K < T - 1."""
    return num_timesteps if num_timesteps is not None and num_timesteps < num_train_timesteps - 1 else None


# The exact bound costs T forward passes per held-out image; a training image costs about 3 (forward and
# backward). Without --final_eval_timesteps the final bound is exact when that is at most this share of the
# run's UNet work, else estimated from ESTIMATE_TIMESTEPS terms (fewer in a short run: `affordable_steps`): a count,
# not a clock, so reruns agree.
EXACT_BOUND_MAX_SHARE = 0.25
ESTIMATE_TIMESTEPS = 100


# The analytic variance's table costs T forward passes per image; Bao et al. 2022 (App. G.2) find 10 to 100 images
# as good as 50,000. By default it takes as many training images as fit in this share of the run's UNet work.
ANALYTIC_MAX_SHARE = 0.1
ANALYTIC_MAX_IMAGES = 100


def analytic_image_count(args, images_seen: int, streaming: bool) -> int:
    """M of the analytic table: --analytic_images, else the default above; 0 for a learned variance or a stream
    (whose images are not kept; `simple-ddpm analytic` estimates it afterwards)."""
    if args.analytic_images is not None:
        return args.analytic_images
    if args.variance_type in ("learned_range", "learned") or streaming:
        return 0
    return min(ANALYTIC_MAX_IMAGES, int(ANALYTIC_MAX_SHARE * 3 * images_seen / args.num_train_timesteps))


def fill_analytic_table(pipe: SimpleDDPMPipeline, data: PreparedImages, args, count: int) -> dict | None:
    """Estimate G_t on the first `count` training images and store it in the pipeline's scheduler config, its
    variance_type left as trained (the card's bound and grid are of that model); None when nothing was done."""
    if count == 0:
        return None
    if data.train is None:
        logger.info("No analytic variance table with --streaming; run `simple-ddpm analytic` on the folder.")
        return None
    R = data.resolution
    pixels = (
        data.train[:count] if torch.is_tensor(data.train) else torch.stack([p[:, :R, :R] for p in data.train[:count]])
    )
    trained = pipe.scheduler.config.variance_type
    start = time.perf_counter()
    T = args.num_train_timesteps
    with final_stage(pipe, f"analytic variance table from {len(pixels)} training images", len(pixels) * T):
        table = pipe.estimate_analytic_variance(
            pixels_to_model_input(pixels).to(pipe.device),
            generator=torch.Generator().manual_seed(args.seed),
            batch_size=args.eval_batch_size,
        )
    pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, variance_type=trained)
    seconds = time.perf_counter() - start
    return {
        "images": len(pixels),
        "network_calls": len(pixels) * len(table),
        "seconds": seconds,
        "variance_type": trained,
    }


def final_eval_timesteps(args, num_eval_images: int, images_seen: int) -> int | None:
    """K of the final bound (None: exact): --final_eval_timesteps, else exact where it is cheap (see above)."""
    if args.final_eval_timesteps is not None:
        return sampled_timesteps(args.final_eval_timesteps, args.num_train_timesteps)
    exact_work = num_eval_images * args.num_train_timesteps
    cheap = exact_work <= EXACT_BOUND_MAX_SHARE * 3 * images_seen
    estimate = affordable_steps(ESTIMATE_TIMESTEPS, num_eval_images, images_seen)
    return None if cheap else sampled_timesteps(estimate, args.num_train_timesteps)


def held_out_bits(
    pipe: SimpleDDPMPipeline,
    eval_pixels: torch.Tensor,
    args,
    num_timesteps: int | None,
    eval_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image negative ELBO in bits/dim of the fixed held-out images, with fixed noise (evaluations compare):
    exact, or the unbiased stratified estimate from `num_timesteps` terms. With `eval_labels`, the bound on
    -log p(x | y); a class-conditional model without them gives the bound on -log p(x) (the no-label token)."""
    output = pipe.elbo(
        pixels_to_model_input(eval_pixels).to(pipe.device),
        generator=torch.Generator().manual_seed(args.seed),
        batch_size=args.eval_batch_size,
        num_timesteps=sampled_timesteps(num_timesteps, args.num_train_timesteps),
        class_labels=eval_labels,
    )
    return output.bits_per_dim


def held_out_bits_per_dim(
    pipe: SimpleDDPMPipeline,
    eval_pixels: torch.Tensor,
    args,
    num_timesteps: int | None,
    eval_labels: torch.Tensor | None = None,
) -> float:
    """The mean of `held_out_bits`: what train.py logs and writes to metrics.json."""
    return held_out_bits(pipe, eval_pixels, args, num_timesteps, eval_labels).mean().item()


def log_grid(accelerator: Accelerator, grid: np.ndarray, step: int) -> None:
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", grid, step, dataformats="HWC")
        elif tracker.name == "wandb":
            tracker.log_images({"samples": [grid]}, step=step)


def save_checkpoint(accelerator: Accelerator, args, unet, step: int, uploader: BackgroundUploader | None) -> None:
    """All processes save (each its own RNG state); the main one prunes old checkpoints and, once every process
    has written its files, queues the upload."""
    folder = checkpoint_dir(Path(args.output_dir), step)
    raw = accelerator.unwrap_model(unet)
    save_state_atomically(accelerator, folder, raw, lambda partial: write_unet_config(partial, raw.config))
    if accelerator.is_main_process:
        prune_checkpoints(Path(args.output_dir), args.checkpoints_total_limit)
    accelerator.wait_for_everyone()
    if uploader is not None:
        uploader.upload(folder, path_in_repo=HUB_CHECKPOINT_DIR, commit_message=f"Checkpoint at step {step}")


@dataclass
class Trainee:
    """What the loop updates: the prepared UNet, its optimizer and learning-rate schedule, and the EMA."""

    unet: torch.nn.Module
    scheduler: SimpleDDPMScheduler
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMAModel | None
    timestep_sampler: UniformSampler


def optimizer_step(args, accelerator: Accelerator, model: Trainee, batches: Iterator[torch.Tensor], step: int):
    """One optimizer step over --gradient_accumulation_steps batches; returns the mean loss over all processes
    and the gradient norm before clipping. A non-finite loss stops training before the weights see it."""
    losses = []
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    for _ in range(args.gradient_accumulation_steps):
        pixels, labels = next(batches)
        x0 = pixels_to_model_input(pixels.to(accelerator.device)).contiguous(memory_format=memory_format)
        if labels is not None:
            null_label = accelerator.unwrap_model(model.unet).config.num_class_embeds - 1
            labels = drop_class_labels(labels.to(accelerator.device), args.class_dropout, null_label)
        with accelerator.accumulate(model.unet):
            loss = diffusion_loss(
                model.unet,
                model.scheduler,
                x0,
                loss_weighting=args.loss_weighting,
                snr_gamma=args.snr_gamma,
                p2_gamma=args.p2_gamma,
                p2_k=args.p2_k,
                loss_type=args.loss_type,
                vlb_weight=args.vlb_weight,
                timestep_sampler=model.timestep_sampler,
                gather=accelerator.gather,
                class_labels=labels,
            )
            losses.append(accelerator.reduce(loss.detach(), reduction="mean"))
            if not torch.isfinite(losses[-1]):
                last_checkpoint = (list_checkpoints(Path(args.output_dir)) or ["none"])[-1]
                raise TrainingDiverged(
                    f"error: the loss is {losses[-1].item()} at step {step}; stopping. "
                    f"Last good checkpoint: {last_checkpoint}."
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(model.unet.parameters(), args.max_grad_norm or math.inf)
            model.optimizer.step()
            model.lr_scheduler.step()
            model.optimizer.zero_grad(set_to_none=True)
    if model.ema is not None:
        model.ema.step(model.unet.parameters())
    return torch.stack(losses).mean().item(), float(grad_norm)


def write_periodic_outputs(
    args,
    accelerator: Accelerator,
    model: Trainee,
    data: PreparedImages,
    step: int,
    uploader: BackgroundUploader | None,
    fid: FrechetEvaluation | None = None,
) -> None:
    """On the main process: a sample grid every --sample_every steps, the held-out bits/dim every --eval_every,
    the Frechet distance every --fid_every."""
    if accelerator.is_main_process:
        pipe = sampling_pipeline(accelerator, model.unet, model.ema, model.scheduler, data.class_names)
        if periodic(step, args.sample_every):
            grid_path = Path(args.output_dir) / SAMPLES_DIR / f"step_{step:07d}.png"
            grid = write_samples(pipe, args, grid_path, args.periodic_inference_steps)
            log_grid(accelerator, grid, step)
            if uploader is not None:
                uploader.upload(grid_path, path_in_repo=f"{SAMPLES_DIR}/{grid_path.name}")
        if periodic(step, args.eval_every):
            bits = held_out_bits_per_dim(pipe, data.eval, args, args.eval_timesteps, data.eval_labels)
            accelerator.log({"eval/bits_per_dim": bits}, step=step)
            tqdm.write(f"step {step}: held-out bits/dim {bits:.4f}")
        if fid is not None and periodic(step, args.fid_every):
            distance = fid(pipe)
            accelerator.log({"eval/frechet_distance": distance}, step=step)
            tqdm.write(f"step {step}: Frechet distance {distance:.4f} ({fid.extractor.name})")
    accelerator.wait_for_everyone()


def train(
    args,
    accelerator,
    data: PreparedImages,
    model: Trainee,
    progress: TrainingProgress,
    max_steps: int,
    uploader: BackgroundUploader | None,
    fid: FrechetEvaluation | None = None,
) -> None:
    """Ho et al. Algorithm 1 until `max_steps`. Sampling and evaluation use their own generators, not torch's
    global one, and a checkpoint is the last thing in a step, so a resumed run draws the same noise."""
    images_per_step = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    first_batch = progress.global_step * args.gradient_accumulation_steps
    batches = training_batches(data, args, accelerator.process_index, accelerator.num_processes, first_batch)
    window_start, window_steps = time.perf_counter(), 0
    model.unet.train()
    with tqdm(
        total=max_steps, initial=progress.global_step, desc="steps", disable=not accelerator.is_main_process
    ) as bar:
        while progress.global_step < max_steps:
            was_uniform = not model.timestep_sampler.warmed_up()
            loss, grad_norm = optimizer_step(args, accelerator, model, batches, progress.global_step + 1)
            progress.global_step += 1
            if was_uniform and model.timestep_sampler.warmed_up():
                logger.info(
                    "Every timestep has a full loss history after step %d: timesteps are importance-sampled "
                    "from here on.",
                    progress.global_step,
                )
            progress.images_seen += images_per_step
            step, lr, window_steps = progress.global_step, model.lr_scheduler.get_last_lr()[0], window_steps + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            if step % args.logging_steps == 0:
                images_per_s = window_steps * images_per_step / (time.perf_counter() - window_start)
                accelerator.log(
                    {
                        "train/loss": loss,
                        "train/lr": lr,
                        "train/grad_norm": grad_norm,
                        "train/images_per_s": images_per_s,
                    },
                    step=step,
                )
                window_start, window_steps = time.perf_counter(), 0
            periodic_outputs = (args.sample_every, args.eval_every, args.fid_every)
            if step < max_steps and any(periodic(step, every) for every in periodic_outputs):
                write_periodic_outputs(args, accelerator, model, data, step, uploader, fid)
                window_start, window_steps = time.perf_counter(), 0  # images/s counts training only
            stop_signal = stop_signals.agreed_signal(accelerator)
            if periodic(step, args.checkpointing_steps) or stop_signal:
                save_checkpoint(accelerator, args, model.unet, step, uploader)
            if stop_signal:
                raise TrainingInterrupted(stop_signal, step, checkpoint_dir(Path(args.output_dir), step))


def periodic(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def finish(
    args,
    accelerator: Accelerator,
    data: PreparedImages,
    model: Trainee,
    progress: TrainingProgress,
    repo_id: str | None,
    fid: FrechetEvaluation | None = None,
) -> None:
    """Save the EMA pipeline, a final sample grid, the exact held-out bits/dim, metrics.json and README.md, whose
    usage snippet loads `repo_id` (default: the folder)."""
    output_dir = Path(args.output_dir)
    pipe = sampling_pipeline(accelerator, model.unet, model.ema, model.scheduler, data.class_names)
    analytic = fill_analytic_table(pipe, data, args, analytic_image_count(args, progress.images_seen, args.streaming))
    save_pipeline_atomically(pipe, output_dir)
    grid_steps = final_grid_steps(args, progress.images_seen, EXACT_BOUND_MAX_SHARE)
    with final_stage(
        pipe, f"sample grid of {args.num_samples} images, {grid_steps} steps", args.num_samples * grid_steps
    ):
        grid = write_samples(pipe, args, output_dir / FINAL_GRID_NAME, grid_steps)
    log_grid(accelerator, grid, progress.global_step)
    eval_timesteps = final_eval_timesteps(args, len(data.eval), progress.images_seen)
    terms = args.num_train_timesteps if eval_timesteps is None else eval_timesteps + 1
    bound = "exact" if eval_timesteps is None else f"{eval_timesteps}-term estimate"
    bounds = 1 if data.class_names is None else 2  # a class-conditional model: given the label, and without
    with final_stage(pipe, f"held-out bound ({bound}) of {len(data.eval)} images", bounds * len(data.eval) * terms):
        bits = held_out_bits_per_dim(pipe, data.eval, args, eval_timesteps, data.eval_labels)
        unconditional_bits = None if bounds == 1 else held_out_bits_per_dim(pipe, data.eval, args, eval_timesteps)
    accelerator.log({"eval/bits_per_dim": bits}, step=progress.global_step)
    conditioning = {}
    if data.class_names is not None:
        conditioning = {"held_out_bits_per_dim_unconditional": unconditional_bits, "class_names": data.class_names}
    metrics = {
        "held_out_bits_per_dim": bits,
        "held_out_images": len(data.eval),
        "eval_timesteps": eval_timesteps or args.num_train_timesteps,
        "steps": progress.global_step,
        "images_seen": progress.images_seen,
        "wall_time_s": progress.wall_time_s(),
        "sample_grid": FINAL_GRID_NAME,
        "num_samples": args.num_samples,
        "num_inference_steps": grid_steps,
        "skipped_images": data.num_skipped,
        **conditioning,
        **({"analytic_variance": analytic} if analytic else {}),
        "training": training_setup(args, accelerator, data, pipe.unet)
        | {"importance_sampling_warmed_up": model.timestep_sampler.warmed_up()},
    }
    if fid is not None:
        samples = f"Frechet distance of {fid.num_samples} samples, {fid.num_inference_steps} steps"
        with final_stage(None, samples, fid.num_samples * fid.num_inference_steps):
            distance = fid(pipe, progress=sys.stderr.isatty())
        accelerator.log({"eval/frechet_distance": distance}, step=progress.global_step)
        metrics["frechet_distance"] = fid.describe(distance)
    (output_dir / METRICS_NAME).write_text(json.dumps(metrics, indent=2))
    write_model_card(output_dir, repo_id=repo_id)
    logger.info(
        "Held-out bits/dim %.4f (%s) after %d steps; pipeline saved to %s",
        bits,
        "exact" if eval_timesteps is None else f"estimated from {eval_timesteps} of {args.num_train_timesteps} terms",
        progress.global_step,
        output_dir,
    )


def training_setup(args, accelerator: Accelerator, data: PreparedImages, unet: UNet2DModel) -> dict:
    """What the model card reports about the run."""
    return {
        "dataset": data.dataset_id,
        "eval_split": args.eval_split or f"{args.eval_fraction:.0%} of {args.split} held out",
        "resolution": data.resolution,
        "channels": data.channels,
        "model_description": (
            f"`{args.model_config_name_or_path}`"
            if args.model_config_name_or_path
            else f"`{args.model_preset}` preset"
        ),
        "num_parameters": sum(p.numel() for p in unet.parameters()),
        "recipe": args.recipe,
        "recipe_departures": recipe_departures(args),
        "num_train_timesteps": args.num_train_timesteps,
        "beta_schedule": args.beta_schedule,
        "prediction_type": args.prediction_type,
        "loss_weighting": args.loss_weighting,
        **({"p2_gamma": args.p2_gamma, "p2_k": args.p2_k} if args.loss_weighting == "p2" else {}),
        "variance_type": args.variance_type,
        "loss_type": args.loss_type,
        "vlb_weight": args.vlb_weight,
        "timestep_sampling": args.timestep_sampling,
        **(
            {"log_normal_mean": args.log_normal_mean, "log_normal_std": args.log_normal_std}
            if args.timestep_sampling == "log_normal"
            else {}
        ),
        "learning_rate": args.learning_rate,
        "lr_scheduler": args.lr_scheduler,
        "lr_warmup_steps": args.lr_warmup_steps,
        "train_batch_size": args.train_batch_size,
        "num_processes": accelerator.num_processes,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "total_batch_size": args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "use_ema": args.use_ema,
        "ema_max_decay": args.ema_max_decay,
        "ema_power": args.ema_power,
        "mixed_precision": accelerator.mixed_precision,
        "seed": args.seed,
        "class_column": data.class_column,
        "class_dropout": args.class_dropout,
    }


def main(argv: list[str] | None = None) -> None:
    progress = TrainingProgress()  # counts wall time from here
    threads = configure_cpu_threads()
    args = parse_args(argv)
    hub_token = resolve_token(vars(args).pop("hub_token"))  # off `args`: never in a tracker, log or saved file
    processes = start_processes(threads)
    if processes.is_main_process:
        remove_partial_saves(Path(args.output_dir))  # what a run killed mid-save left

    with reported_as_one_line(processes):
        check_mixed_precision(choose_precision(args).precision, processes.device.type)
        uploader = connect_hub(args, processes, hub_token)
        data = prepare_data(args, processes)
        fid = FrechetEvaluation.prepare(args, data.eval, processes.device)
        set_seed(args.seed)  # the same initial weights on every process
        num_classes = None if data.class_names is None else len(data.class_names)
        unet = use_float32_attention(build_unet(args, data.channels, data.resolution, num_classes))
        resume_from = checkpoint_to_resume(args, unet)
        max_steps = total_train_steps(args, data, processes.num_processes)
    batch_shape = (args.train_batch_size, data.channels, data.resolution, data.resolution)
    accelerator = build_accelerator(args, unet.to(processes.device), batch_shape, checkpoint_precision(resume_from))
    progress.mixed_precision = accelerator.mixed_precision
    set_seed(args.seed, device_specific=True)  # but different noise on each process
    logger.info(
        "UNet: %.2fM parameters; %d optimizer steps", sum(p.numel() for p in unet.parameters()) / 1e6, max_steps
    )

    unet = speed_up(args, unet.to(accelerator.device), accelerator.device)
    ema = build_ema(args, unet, accelerator.device)
    scheduler = build_scheduler(args)
    timestep_sampler = create_timestep_sampler(
        args.timestep_sampling,
        args.num_train_timesteps,
        scheduler.alphas_cumprod,
        args.log_normal_mean,
        args.log_normal_std,
    )
    parameter_names = [name for name, _ in unet.named_parameters()]
    checkpoint_training_state(accelerator, progress, ema, parameter_names, timestep_sampler)
    optimizer, lr_scheduler = build_optimizer(args, unet, max_steps, accelerator.num_processes, accelerator.device)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    model = Trainee(unet, scheduler, optimizer, lr_scheduler, ema, timestep_sampler)
    if resume_from is not None:
        with reported_as_one_line(accelerator):
            load_checkpoint(accelerator, resume_from)
        if ema is not None:
            ema.to(accelerator.device)
        logger.info("Resumed from %s at step %d", resume_from, progress.global_step)
    if accelerator.is_main_process:
        accelerator.init_trackers("simple-ddpm", config=tracker_config(args))

    exit_status = 0
    try:
        with reported_as_one_line(accelerator), stop_signals.handling():
            train(args, accelerator, data, model, progress, max_steps, uploader, fid)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            finish(args, accelerator, data, model, progress, uploader.repo_id if uploader else None, fid)
            if uploader is not None and not push_final(Path(args.output_dir), uploader, hub_token):
                exit_status = 1
    except (TrainingDiverged, SaveRefused, TrainingInterrupted) as error:
        if accelerator.is_main_process:
            print(error, file=sys.stderr)
        exit_status = error.exit_status
    del model, unet, optimizer, lr_scheduler  # before the process group: see end_processes
    end_processes(accelerator, exit_status)


def tracker_config(args) -> dict:
    """The options as TensorBoard hparams accept them (no None, no lists)."""
    return {
        key: value if isinstance(value, int | float | str | bool) else str(value) for key, value in vars(args).items()
    }


if __name__ == "__main__":
    main()
