"""The process and accelerator setup that train.py and distill.py share: this process's place in the run and its
logging, the autocast precision (measured where that pays), the Accelerator, bad input reported in one line, and
the pipeline that samples from the network being trained."""

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import ProjectConfiguration, broadcast_object_list
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

from simple_ddpm import SimpleDDPMPipeline
from simple_ddpm.cpu_threads import ThreadChoice
from simple_ddpm.hardware import (
    PrecisionChoice,
    measured_precision,
    measurement_key,
    resolve_mixed_precision,
    unet_seconds,
)
from simple_ddpm.hub import BackgroundUploader, HubAccessError, error_summary, prepare_repo, push_pipeline_folder
from simple_ddpm.image_datasets import DatasetInputError
from training.arguments import InvalidTrainingInput

logger = logging.getLogger("train")


@contextmanager
def reported_as_one_line(processes: PartialState | Accelerator):
    """Bad input or Hub access ends the run with `error: <message>` (exit status 2) instead of a traceback."""
    try:
        yield
    except (InvalidTrainingInput, DatasetInputError, HubAccessError) as error:
        if processes.is_main_process:
            print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def start_processes(threads: ThreadChoice | None = None) -> PartialState:
    """This process's place in the run (accelerate's PartialState: index, count, device) and its logging, whose
    first line gives the CPU threads. The Accelerator comes later: with --mixed_precision auto on a CPU its
    precision is measured on the run's UNet."""
    # Processes started by `accelerate launch --multi_gpu` (torchrun) on a machine without GPUs would each train
    # alone unless accelerate is told to use the CPU; it then joins them with gloo.
    processes = PartialState(cpu=cpu_processes_joined())
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file otherwise
    if not processes.is_main_process:
        logging.getLogger().setLevel(logging.ERROR)
        datasets.disable_progress_bars()
    if threads is not None:
        logger.info("%s", threads.describe())
    return processes


def cpu_processes_joined() -> bool:
    no_gpu = not (torch.cuda.is_available() or torch.xpu.is_available())
    return no_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1


def choose_precision(
    args,
    unet: UNet2DModel | None = None,
    batch_shape: tuple[int, ...] | None = None,
    resumed_precision: str | None = None,
):
    """--mixed_precision resolved (`simple_ddpm.hardware.resolve_mixed_precision`); "auto" keeps the
    precision of the checkpoint it resumes (`resumed_precision`: a measurement could differ on another machine or
    load, and the resumed run would then not be the uninterrupted one), else on a CPU with native bf16 measures a
    few forward and backward passes of `unet` on `batch_shape` in float32 and bf16 (cached per machine, UNet
    config and batch shape), on the main process, whose choice every process takes."""
    processes = PartialState()
    launcher_choice = os.environ.get("ACCELERATE_MIXED_PRECISION")
    resumable = resumed_precision is not None and (resumed_precision != "fp16" or processes.device.type == "cuda")
    if args.mixed_precision == "auto" and launcher_choice in (None, "", "no") and resumable:
        return PrecisionChoice(resumed_precision, "the precision the resumed checkpoint was trained in")

    def measure() -> PrecisionChoice:
        choice = None
        if processes.is_main_process:
            key = measurement_key(
                unet, batch_shape, training=True, processes=processes.num_processes, channels_last=args.channels_last
            )
            choice = measured_precision(key, lambda: unet_seconds(unet, batch_shape, True, args.channels_last))
        return broadcast_object_list([choice])[0]

    return resolve_mixed_precision(
        args.mixed_precision,
        launcher_choice,
        processes.device.type,
        measure=None if unet is None else measure,
    )


def build_accelerator(
    args,
    unet: UNet2DModel | None = None,
    batch_shape: tuple[int, ...] | None = None,
    resumed_precision: str | None = None,
) -> Accelerator:
    output_dir = Path(args.output_dir)
    precision = choose_precision(args, unet, batch_shape, resumed_precision)
    accelerator = Accelerator(
        cpu=cpu_processes_joined(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=precision.precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    logger.info("Autocast: %s", precision.describe())
    return accelerator


def sampling_pipeline(
    accelerator: Accelerator, unet, ema: EMAModel | None, scheduler, class_names: list[str] | None = None
) -> SimpleDDPMPipeline:
    """A pipeline with a float32 copy of the EMA weights (or the raw weights without EMA), in eval mode."""
    raw = accelerator.unwrap_model(unet)
    with torch.random.fork_rng(devices=[]):  # a fresh UNet's random init must not move the training noise
        copy = UNet2DModel.from_config(raw.config)
    if ema is not None:
        ema.copy_to(copy.parameters())
    else:
        copy.load_state_dict(raw.state_dict())
    pipe = SimpleDDPMPipeline(unet=copy.float().eval(), scheduler=scheduler, class_names=class_names)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(accelerator.device)


def connect_hub(args, processes: PartialState, token: str | None) -> BackgroundUploader | None:
    """With --push_to_hub, on the main process: create the repo and prove write access now, not after hours of
    training (`HubAccessError` otherwise), and return the uploader of checkpoints and sample grids."""
    if not (args.push_to_hub and processes.is_main_process):
        return None
    repo_id = prepare_repo(args.hub_model_id, token, private=args.hub_private_repo)
    logger.info("Pushing to https://huggingface.co/%s", repo_id)
    return BackgroundUploader(repo_id, token)


def push_final(output_dir: Path, uploader: BackgroundUploader, token: str | None, what: str = "trained") -> bool:
    """Wait for the background uploads, then push the trained folder in one commit (checkpoints left out). A failure
    is one line with the command that retries; the `what` ("trained", "distilled") folder is complete either way."""
    uploader.wait()
    try:
        url = push_pipeline_folder(output_dir, uploader.repo_id, token, commit_message=f"Upload {what} pipeline")
    except Exception as error:
        print(
            f"error: pushing to {uploader.repo_id} failed ({error_summary(error)}). The {what} folder is complete; "
            f"retry with: simple-ddpm push {output_dir} {uploader.repo_id}",
            file=sys.stderr,
        )
        return False
    logger.info("Pushed %s to https://huggingface.co/%s (%s)", output_dir, uploader.repo_id, url)
    return True


def end_processes(accelerator: Accelerator, exit_status: int) -> None:
    """Free the accelerator's prepared objects, destroy the process group, and exit with `exit_status` if nonzero.
    The caller first drops its own references to what it prepared: with several processes the DDP wrapper's reducer
    holds the group, and were it the group's last owner when the script's main() returns, its destructor (which
    keeps the GIL, unlike the group's own) would join the group's worker thread while that thread waits for the GIL
    to free a finished barrier's tensor, and the process would hang after its run is saved (seen once on CI)."""
    accelerator.free_memory()  # the accelerator's references, then gc.collect()
    accelerator.end_training()  # destroys the process group
    if exit_status:
        sys.exit(exit_status)
