"""What the `simple-ddpm` commands (cli.py, editing_commands.py) share: the usage error, argument types and
deprecated spellings, the pipeline loaded from a folder or Hub repo id, images and datasets read, images and
configs written."""

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .image_datasets import (
    UNREADABLE_IMAGE_ERRORS,
    describe,
    find_image_column,
    first_line,
    is_saved_dataset,
    open_image,
    undecoded,
)
from .image_processing import image_grid, to_pixels
from .pipeline_simple_ddpm import SimpleDDPMPipeline
from .scheduling_simple_ddpm import SimpleDDPMScheduler

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class UsageError(Exception):
    """Bad input to the command; reported as one line, without a traceback."""


# Lines for stderr that wait until the command starts its work, so that bad arguments fail first, alone.
_notes_before_work: list[str] = []


def note_before_work(line: str) -> None:
    """Print `line` to stderr when the command starts its work (`start_work`), not before its checks."""
    _notes_before_work.append(line)


def forget_notes_before_work() -> None:
    """The command ended (a usage error before its work, say): its waiting lines are not printed."""
    _notes_before_work.clear()


def start_work() -> None:
    """The command's arguments are checked: print the lines that waited for this."""
    while _notes_before_work:
        print(_notes_before_work.pop(0), file=sys.stderr)


def load_pipeline(model: str, revision: str | None, device: str, dtype: str) -> SimpleDDPMPipeline:
    """A SimpleDDPMPipeline from a local folder or a Hub repo id, on `device`, progress bars off."""
    start_work()
    pipe = open_pipeline(model, revision, DTYPES[dtype])
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def open_pipeline(model: str, revision: str | None = None, dtype: torch.dtype | None = None) -> SimpleDDPMPipeline:
    """A SimpleDDPMPipeline from a local folder or a Hub repo id (in `dtype`, default: as saved); a `UsageError` in
    one line for what cannot be loaded."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise UsageError(f"{model} is not a pipeline folder: it has no model_index.json.")
    elif model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise UsageError(f"{model} is neither an existing folder nor a Hub repo id (USER/NAME).")
    try:
        source = str(path) if path.exists() else model
        return SimpleDDPMPipeline.from_pretrained(source, revision=revision, dtype=dtype)
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(f"Cannot load {model}: {first_line(error)}") from None


def parse_class(pipe: SimpleDDPMPipeline, text: str) -> int | str:
    """A --class value: a class name of the model, else an index."""
    names = pipe.config.get("class_names") or []
    if text in names or not text.lstrip("-").isdigit():
        return text
    return int(text)


def write_images(
    images: torch.Tensor, output: str, what: str, cols: int | None = None, detail: str = ""
) -> list[Image.Image]:
    """Images (N, C, H, W) in [0, 1]: a grid (`cols` columns) when `output` ends in .png, else one PNG per image
    in the folder `output`; says so, `what` naming the images and `detail` ending a grid's line. Returns them as
    PIL images."""
    pil_images = SimpleDDPMPipeline.numpy_to_pil(images.cpu().permute(0, 2, 3, 1).numpy())
    path = Path(output)
    if path.suffix.lower() == ".png":
        path.parent.mkdir(parents=True, exist_ok=True)
        image_grid(images, cols=cols).save(path)
        print(f"Wrote a grid of {len(images)} {what} to {path}{detail}")
    else:
        path.mkdir(parents=True, exist_ok=True)
        width = len(str(len(images) - 1))
        for i, image in enumerate(pil_images):
            image.save(path / f"{i:0{width}d}.png")
        print(f"Wrote {len(images)} {what} to {path}/")
    return pil_images


def read_image(path: Path) -> Image.Image:
    with Image.open(path) as image:  # closes the file: a folder may hold more images than open files allowed
        return image.copy()


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


class DeprecatedSpelling(argparse.Action):
    """An option's former name: stores into the new name's destination after a `FutureWarning` naming it."""

    def __init__(self, option_strings: list[str], dest: str, new_name: str, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new_name = new_name

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warnings.warn(
            f"{option_string} is deprecated and will be removed; use {self.new_name}.", FutureWarning, stacklevel=2
        )
        setattr(namespace, self.dest, values)


def add_option(parser: argparse.ArgumentParser, name: str, *, deprecated: str | None = None, **kwargs) -> None:
    """`name` with its help; `deprecated`, a former spelling, is accepted, hidden from --help, and warns."""
    action = parser.add_argument(name, **kwargs)
    if deprecated is not None:
        parser.add_argument(
            deprecated,
            dest=action.dest,
            type=kwargs.get("type"),
            action=DeprecatedSpelling,
            new_name=name,
            help=argparse.SUPPRESS,
        )


def load_images(data: str, split: str, image_column: str | None, count: int | None) -> list[Image.Image]:
    """The first `count` (default: all) images of a folder of image files, a `save_to_disk` folder, or a
    `datasets` dataset id.

    A dataset is read as train.py reads it (`simple_ddpm.image_datasets`): the same image-column rule, and a
    column of file paths works too."""
    path = Path(data).expanduser()
    if path.is_dir() and not is_saved_dataset(path):
        files = image_folder_files(path)
        if not files:
            raise UsageError(f"{data} holds no image files ({', '.join(IMAGE_SUFFIXES)}) and no saved dataset.")
        return [read_image(p) for p in files[:count]]

    try:
        import datasets
    except ImportError:
        raise UsageError(
            f"Reading {data} needs the `datasets` package: pip install -e '.[train]' in simple_ddpm's checkout."
        ) from None
    if not path.is_dir() and (path.exists() or data.startswith((".", "/", "~"))):
        raise UsageError(f"{data} is neither an image folder, a saved dataset, nor a dataset id.")
    try:
        dataset = datasets.load_from_disk(str(path)) if path.is_dir() else datasets.load_dataset(data, split=split)
    except (OSError, ValueError) as error:
        raise UsageError(f"Cannot load the dataset {data}: {first_line(error)}") from None
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise UsageError(f"{data} has no split {split!r}; its splits are: {', '.join(dataset)}.")
        dataset = dataset[split]
    column = find_image_column(dataset.features, image_column, option="--image-column")
    cells = undecoded(dataset.select(range(min(count or len(dataset), len(dataset)))), column)[column]
    images = []
    for index, encoded in enumerate(cells):
        try:
            images.append(open_image(encoded))
        except UNREADABLE_IMAGE_ERRORS as error:
            raise UsageError(f"Cannot read image {describe(encoded, index)} of {data}: {first_line(error)}") from None
    return images


def write_text_atomically(path: Path, text: str) -> None:
    """Replace `path` by `text` in one rename: a reader sees the old file or the new one, never a part."""
    partial = path.with_name(f".partial-{path.name}")
    with open(partial, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def write_config_atomically(scheduler: SimpleDDPMScheduler, folder: Path) -> None:
    """`scheduler.save_config(folder)`, as one rename of its scheduler_config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomically(folder / scheduler.config_name, scheduler.to_json_string())


def image_folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def pixels_of(images: list[Image.Image], channels: int, size: int) -> torch.Tensor:
    """uint8 pixels (N, C, size, size), converted and resized as training does (`to_pixels`)."""
    return torch.from_numpy(np.stack([to_pixels(image, channels, size) for image in images]))
