"""What the `simple-ddpm` commands (cli.py, editing_commands.py) share: the usage error, argument types, the
pipeline loaded from a folder or Hub repo id, and images read and written."""

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

from .image_datasets import first_line
from .image_processing import image_grid
from .pipeline_simple_ddpm import SimpleDDPMPipeline

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
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise UsageError(f"{model} is not a pipeline folder: it has no model_index.json.")
    elif model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise UsageError(f"{model} is neither an existing folder nor a Hub repo id (USER/NAME).")
    try:
        pipe = SimpleDDPMPipeline.from_pretrained(
            str(path) if path.exists() else model, revision=revision, dtype=DTYPES[dtype]
        )
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(f"Cannot load {model}: {first_line(error)}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


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
