"""Checkpoint folders of train.py: naming, pruning, choosing one to resume from, and checking it fits the model.

A checkpoint is what `accelerator.save_state` writes (model, optimizer, lr schedule, every process's RNG state)
plus, through accelerate's save and load hooks, our `TrainingProgress` as JSON, the EMA as safetensors and
JSON, the importance sampler's loss history as safetensors, and the UNet's config, in
OUTPUT_DIR/checkpoint-<step>. Nothing of ours is pickled: accelerate would load objects registered with
`register_for_checkpointing` with a full unpickle, which can run code from the file; what it loads itself it opens
with `torch.load(weights_only=True)` or safetensors.
"""

import json
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from simple_ddpm.image_datasets import first_line
from training.arguments import InvalidTrainingInput
from training.unet_presets import describe_classes

CHECKPOINT_PREFIX = "checkpoint-"
UNET_CONFIG_NAME = "unet_config.json"
MODEL_WEIGHTS_NAME = "model.safetensors"  # accelerate's name for the first prepared model
PROGRESS_NAME = "training_progress.json"
EMA_WEIGHTS_NAME = "ema.safetensors"  # the EMA's shadow weights, under the UNet's parameter names
EMA_STATE_NAME = "ema.json"  # the EMA's decay schedule and step count
TIMESTEP_SAMPLER_NAME = "timestep_sampler.safetensors"  # --timestep_sampling importance: the loss history
# Checkpoints in accelerate's pickles of registered objects (CHANGELOG.md) resume through torch's restricted
# unpickler, under these names in a view of the folder (see load_checkpoint).
LEGACY_NAMES = {"custom_checkpoint_0.pkl": "legacy_progress.pkl", "custom_checkpoint_1.pkl": "legacy_ema.pkl"}
LEGACY_PROGRESS_NAME, LEGACY_EMA_NAME = LEGACY_NAMES.values()


class TrainingProgress:
    """Counters that a resumed run continues from; `checkpoint_training_state` puts them in checkpoints."""

    def __init__(self):
        self.global_step = 0  # optimizer steps taken
        self.images_seen = 0  # over all processes
        self.mixed_precision: str | None = None  # the run's autocast, which a resumed run keeps
        self._earlier_sessions_s = 0.0
        self._session_start = time.perf_counter()

    def wall_time_s(self) -> float:
        """Seconds of training so far, over this session and the ones it resumes."""
        return self._earlier_sessions_s + time.perf_counter() - self._session_start

    def state_dict(self) -> dict:
        return {
            "global_step": self.global_step,
            "images_seen": self.images_seen,
            "wall_time_s": self.wall_time_s(),
            "mixed_precision": self.mixed_precision,
        }

    def load_state_dict(self, state: dict) -> None:
        self.global_step = state["global_step"]
        self.images_seen = state["images_seen"]
        self._earlier_sessions_s = state["wall_time_s"]
        self._session_start = time.perf_counter()


def checkpoint_training_state(
    accelerator, progress: TrainingProgress, ema, parameter_names: list[str], timestep_sampler=None
) -> None:
    """Make `accelerator.save_state` write `progress`, `ema` (an EMAModel of the parameters named
    `parameter_names`, or None) and the state of `timestep_sampler` (if it has one) in safe formats, and
    `load_state` read them back."""

    def save(models, weights, output_dir: str) -> None:
        if not accelerator.is_main_process:  # like accelerate's own custom states: one copy, from the main process
            return
        folder = Path(output_dir)
        (folder / PROGRESS_NAME).write_text(json.dumps(progress.state_dict(), indent=2))
        if ema is not None:
            state = ema.state_dict()
            shadow = [tensor.detach().cpu().contiguous() for tensor in state.pop("shadow_params")]
            tensors = dict(zip(parameter_names, shadow, strict=True))
            save_file(tensors, folder / EMA_WEIGHTS_NAME)
            (folder / EMA_STATE_NAME).write_text(json.dumps(state, indent=2))
        if timestep_sampler is not None and (sampler_state := timestep_sampler.state_dict()):
            save_file(sampler_state, folder / TIMESTEP_SAMPLER_NAME)

    def load(models, input_dir: str) -> None:
        folder = Path(input_dir)
        if (folder / PROGRESS_NAME).is_file():
            progress.load_state_dict(json.loads((folder / PROGRESS_NAME).read_text()))
        else:
            progress.load_state_dict(restricted_unpickle(folder / LEGACY_PROGRESS_NAME))
        if (folder / TIMESTEP_SAMPLER_NAME).is_file():  # check_training_state saw that the run wants it
            try:
                timestep_sampler.load_state_dict(load_file(folder / TIMESTEP_SAMPLER_NAME))
            except ValueError as error:
                raise InvalidTrainingInput(f"{TIMESTEP_SAMPLER_NAME} of the checkpoint: {error}") from None
        if ema is None:
            return
        if (folder / EMA_WEIGHTS_NAME).is_file():
            state = json.loads((folder / EMA_STATE_NAME).read_text())
            tensors = load_file(folder / EMA_WEIGHTS_NAME)
            if missing := [name for name in parameter_names if name not in tensors]:
                raise InvalidTrainingInput(
                    f"{EMA_WEIGHTS_NAME} of the checkpoint does not fit the model: it has no {missing[0]} "
                    f"({len(missing)} weights missing)."
                )
            state["shadow_params"] = [tensors[name] for name in parameter_names]
        else:
            state = restricted_unpickle(folder / LEGACY_EMA_NAME)
        ema.load_state_dict(state)

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def restricted_unpickle(path: Path):
    """An earlier checkpoint's pickle, through torch's restricted unpickler: tensors and plain values only."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        original = next((name for name, view in LEGACY_NAMES.items() if view == path.name), path.name)
        raise InvalidTrainingInput(
            f"{original} in the checkpoint holds more than tensors and plain values; it is not opened, since "
            f"unpickling it could run code. ({first_line(error)})"
        ) from None


def load_checkpoint(accelerator, folder: Path) -> None:
    """`accelerator.load_state(folder)`. An earlier checkpoint, with accelerate's custom_checkpoint_*.pkl, is
    loaded through a view of the folder (symbolic links) in which those files are renamed, so that accelerate
    does not unpickle them itself: the load hook of `checkpoint_training_state` reads them with
    `torch.load(weights_only=True)`."""
    if not any((folder / name).is_file() for name in LEGACY_NAMES):
        accelerator.load_state(str(folder))
        return
    with tempfile.TemporaryDirectory(prefix="simple-ddpm-checkpoint-") as view:
        for file in folder.iterdir():
            (Path(view) / LEGACY_NAMES.get(file.name, file.name)).symlink_to(file.resolve())
        accelerator.load_state(view)


def check_training_state(folder: Path, use_ema: bool, timestep_sampling: str = "uniform") -> None:
    """Refuse a checkpoint that lacks the counters or, when the run keeps an EMA, the EMA, or whose timestep
    sampling differs from the run's, before loading it."""
    legacy_progress, legacy_ema = LEGACY_NAMES  # as an earlier checkpoint names them
    if not any((folder / name).is_file() for name in (PROGRESS_NAME, legacy_progress)):
        raise InvalidTrainingInput(f"Checkpoint {folder} is incomplete: it has no {PROGRESS_NAME}.")
    if use_ema and not any((folder / name).is_file() for name in (EMA_WEIGHTS_NAME, legacy_ema)):
        raise InvalidTrainingInput(
            f"Checkpoint {folder} has no EMA ({EMA_WEIGHTS_NAME}): it was trained with --no-use_ema. Resume it "
            "with --no-use_ema too, or start a new run."
        )
    has_history = (folder / TIMESTEP_SAMPLER_NAME).is_file()
    if has_history != (timestep_sampling == "importance"):
        saved = "importance" if has_history else "uniform"
        raise InvalidTrainingInput(
            f"Checkpoint {folder} was trained with --timestep_sampling {saved}"
            f"{'' if has_history else ' (it has no ' + TIMESTEP_SAMPLER_NAME + ')'}; resume it with "
            f"--timestep_sampling {saved}, or start a new run."
        )
    if (folder / EMA_WEIGHTS_NAME).is_file() and not (folder / EMA_STATE_NAME).is_file():
        raise InvalidTrainingInput(
            f"Checkpoint {folder} is incomplete: it has {EMA_WEIGHTS_NAME} but no {EMA_STATE_NAME}."
        )


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


def checkpoint_precision(folder: Path | None) -> str | None:
    """The autocast precision the checkpoint's run trained in ("no", "bf16", "fp16"), or None where it has none
    recorded (no checkpoint, or one saved before the precision was recorded)."""
    if folder is None or not (folder / PROGRESS_NAME).is_file():
        return None
    return json.loads((folder / PROGRESS_NAME).read_text()).get("mixed_precision")


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
        if saved.get("num_class_embeds") != current.get("num_class_embeds"):
            raise InvalidTrainingInput(
                f"Checkpoint {folder} is {describe_classes(saved.get('num_class_embeds'))} but this run is "
                f"{describe_classes(current.get('num_class_embeds'))}; resume with the --class_column of the "
                "checkpoint's run."
            )
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
