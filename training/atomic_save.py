"""Checkpoints and the final pipeline written whole or not at all.

Everything is first written under a `.partial-` name in the same folder, flushed to disk, and then renamed into
place, so a run killed at any instant leaves each checkpoint-<step> folder and each pipeline component either
complete or absent: `list_checkpoints` (and so `--resume_from_checkpoint latest`) never sees a partial one.
Weights that are not finite are never written, and a failed write (a full disk) ends the run with one line.
"""

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from accelerate import Accelerator

from training.checkpoints import list_checkpoints

PARTIAL_PREFIX = ".partial-"  # not matched by list_checkpoints; removed by remove_partial_saves at start


class SaveRefused(RuntimeError):
    """A checkpoint or the pipeline was not written (weights not finite, or the disk refused); the run stops and
    the last complete checkpoint is left as it was."""

    exit_status = 1


def remove_partial_saves(output_dir: Path) -> list[Path]:
    """Delete what a run killed mid-save left behind; returns the deleted paths."""
    stale = sorted(output_dir.glob(f"{PARTIAL_PREFIX}*"))
    for path in stale:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return stale


def first_non_finite(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding a NaN or an inf, or None."""
    for name, tensor in named_tensors:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return name
    return None


def last_complete_checkpoint(output_dir: Path) -> str:
    existing = list_checkpoints(output_dir)
    return str(existing[-1]) if existing else "none"


def save_state_atomically(
    accelerator: Accelerator, folder: Path, model: torch.nn.Module, write_extra: Callable[[Path], None]
) -> None:
    """`accelerator.save_state` into `folder`, on every process, through a partial folder renamed by the main
    process once all have written; `write_extra(partial_folder)` adds the main process's own files.

    Raises SaveRefused on every process when the model's weights are not finite (nothing is written) or when
    any process fails to write (the partial folder is removed; earlier checkpoints are untouched).
    """
    output_dir = folder.parent
    bad = first_non_finite(model.named_parameters())
    if bad is not None:  # the weights are the same on every process, so all refuse together
        raise SaveRefused(
            f"error: the weights are not finite ({bad}) at {folder.name}; not saving them. "
            f"Last good checkpoint: {last_complete_checkpoint(output_dir)}."
        )
    partial = output_dir / f"{PARTIAL_PREFIX}{folder.name}"
    failure = ""
    try:
        accelerator.save_state(str(partial))
        if accelerator.is_main_process:
            write_extra(partial)
    except OSError as error:
        failure = describe_os_error(error, partial)
    # Two agreements, each called by every process: all have written, then the main process has renamed.
    if not any_process_failed(accelerator, bool(failure)) and accelerator.is_main_process:
        try:
            flush_to_disk(partial)
            replace_path(partial, folder)
        except OSError as error:
            failure = describe_os_error(error, partial)
    if any_process_failed(accelerator, bool(failure)):
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        raise SaveRefused(
            f"error: cannot write {folder}: {failure or 'another process failed to write its part'}. "
            f"Last good checkpoint: {last_complete_checkpoint(output_dir)}."
        )


def describe_os_error(error: OSError, path: Path) -> str:
    return f"{error.strerror or type(error).__name__} ({error.filename or path})"


def any_process_failed(accelerator: Accelerator, failed: bool) -> bool:
    """Whether `failed` is true on any process (a collective: every process must call it)."""
    if accelerator.num_processes == 1:
        return failed
    flags = accelerator.gather(torch.tensor([int(failed)], device=accelerator.device))
    return bool(flags.any())


def save_pipeline_atomically(pipe, output_dir: Path) -> None:
    """`pipe.save_pretrained(output_dir)`, but into a partial folder first; each component (unet/, scheduler/)
    is then swapped in whole, and model_index.json last, so it only ever names complete components.

    Raises SaveRefused when the weights are not finite or the disk refuses; the previous pipeline in output_dir,
    if any, is then left as it was.
    """
    bad = first_non_finite(pipe.unet.named_parameters())
    if bad is not None:
        raise SaveRefused(
            f"error: the final weights are not finite ({bad}); not saving the pipeline. "
            f"Last good checkpoint: {last_complete_checkpoint(output_dir)}."
        )
    partial = output_dir / f"{PARTIAL_PREFIX}pipeline"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        pipe.save_pretrained(partial)
        flush_to_disk(partial)
        index = partial / "model_index.json"
        for entry in sorted(partial.iterdir(), key=lambda path: path == index):
            replace_path(entry, output_dir / entry.name)
        partial.rmdir()
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise SaveRefused(
            f"error: cannot write the pipeline to {output_dir}: {describe_os_error(error, partial)}. "
            f"Last good checkpoint: {last_complete_checkpoint(output_dir)}."
        ) from None


def replace_path(new: Path, target: Path) -> None:
    """Rename `new` to `target`, replacing it. A folder cannot replace a non-empty one in one rename, so an old
    folder is first renamed aside (to a partial name): at every instant `target` is the old or the new one, or
    briefly absent."""
    if target.is_dir() and not target.is_symlink():
        aside = target.with_name(f"{PARTIAL_PREFIX}replaced-{target.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
        os.replace(new, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(new, target)
    sync_folder(target.parent)


def flush_to_disk(folder: Path) -> None:
    """fsync every file under `folder` and the folders themselves, so a rename never lands before the data."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as file:
                os.fsync(file.fileno())
        elif path.is_dir():
            sync_folder(path)
    sync_folder(folder)


def sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
