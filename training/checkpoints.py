"""Checkpoint folders of train.py: naming, pruning, choosing one to resume from, and checking it fits the model.

A checkpoint is what `accelerator.save_state` writes (model, optimizer, lr schedule, every process's RNG state,
the registered EMA and `TrainingProgress`) plus the UNet's config, in OUTPUT_DIR/checkpoint-<step>.
"""

import json
import shutil
import time
from pathlib import Path

from arguments import InvalidTrainingInput
from safetensors import safe_open

CHECKPOINT_PREFIX = "checkpoint-"
UNET_CONFIG_NAME = "unet_config.json"
MODEL_WEIGHTS_NAME = "model.safetensors"  # accelerate's name for the first prepared model


class TrainingProgress:
    """Counters that a resumed run continues from; registered with accelerate so checkpoints carry them."""

    def __init__(self):
        self.global_step = 0  # optimizer steps taken
        self.images_seen = 0  # over all processes
        self._earlier_sessions_s = 0.0
        self._session_start = time.perf_counter()

    def wall_time_s(self) -> float:
        """Seconds of training so far, over this session and the ones it resumes."""
        return self._earlier_sessions_s + time.perf_counter() - self._session_start

    def state_dict(self) -> dict:
        return {"global_step": self.global_step, "images_seen": self.images_seen, "wall_time_s": self.wall_time_s()}

    def load_state_dict(self, state: dict) -> None:
        self.global_step = state["global_step"]
        self.images_seen = state["images_seen"]
        self._earlier_sessions_s = state["wall_time_s"]
        self._session_start = time.perf_counter()


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / f"{CHECKPOINT_PREFIX}{step}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint folders in output_dir, oldest first."""
    found = [
        p
        for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir() and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    """Delete the oldest checkpoints so that at most `keep` remain."""
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old)


def write_unet_config(folder: Path, unet_config: dict) -> None:
    (folder / UNET_CONFIG_NAME).write_text(json.dumps(dict(unet_config), indent=2, sort_keys=True, default=list))


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint folder to resume from: `resume` itself, the newest in output_dir for "latest" (None when
    there is none yet, so that "latest" also starts a first run), or None."""
    if resume is None:
        return None
    if resume == "latest":
        existing = list_checkpoints(output_dir)
        return existing[-1] if existing else None
    folder = Path(resume)
    if not (folder / MODEL_WEIGHTS_NAME).is_file():
        raise InvalidTrainingInput(
            f"--resume_from_checkpoint {resume} is not a checkpoint: it has no {MODEL_WEIGHTS_NAME}."
        )
    return folder


def check_compatible(folder: Path, unet_config: dict, state_dict: dict) -> None:
    """Refuse a checkpoint of another model before accelerate fails deep inside load_state_dict."""
    saved_config_file = folder / UNET_CONFIG_NAME
    if saved_config_file.is_file():
        saved = json.loads(saved_config_file.read_text())
        current = json.loads(json.dumps(dict(unet_config), default=list))
        differences = sorted(
            key for key in set(saved) | set(current) if not key.startswith("_") and saved.get(key) != current.get(key)
        )
        if differences:
            detail = ", ".join(
                f"{key}: checkpoint {saved.get(key)!r} vs now {current.get(key)!r}" for key in differences[:4]
            )
            raise InvalidTrainingInput(f"Checkpoint {folder} is from a different model ({detail}).")
    with safe_open(folder / MODEL_WEIGHTS_NAME, framework="pt") as weights:
        saved_shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    current_shapes = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
    if saved_shapes != current_shapes:
        mismatched = sorted(set(saved_shapes) ^ set(current_shapes)) or sorted(
            name for name in current_shapes if saved_shapes[name] != current_shapes[name]
        )
        raise InvalidTrainingInput(
            f"Checkpoint {folder} does not fit the model: {len(mismatched)} weights differ, e.g. {mismatched[0]}."
        )
