"""The images of a `datasets` dataset: which folder is a saved dataset, which column holds the images, and how
a cell is decoded. Shared by training/train.py and `simple-ddpm elbo`, so that both read a dataset alike.

`datasets` is imported only where a dataset is at hand: the package itself does not need it.
"""

import io
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

SAVED_DATASET_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")  # what save_to_disk writes
# What decoding an unreadable cell raises: PIL's errors for a truncated or foreign file (OSError, SyntaxError,
# ValueError) and its refusal of a decompression bomb, which derives from none of them.
UNREADABLE_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class DatasetInputError(ValueError):
    """A dataset that cannot give images, reported as one line before any work."""


def first_line(error: Exception) -> str:
    return next(iter(str(error).splitlines()), type(error).__name__)


def is_saved_dataset(path: str | Path) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    path = Path(path).expanduser()
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_DATASET_MARKERS)


def find_image_column(features: Mapping | None, image_column: str | None, option: str = "--image_column") -> str:
    """`image_column` if it is a column, else the only column of type `datasets.Image`; `option` is the
    command-line flag the messages name."""
    import datasets

    features = features or {}
    if image_column is not None:
        if image_column not in features:
            raise DatasetInputError(
                f"{option} {image_column!r} is not a column; the columns are: {', '.join(features)}."
            )
        return image_column
    image_columns = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if len(image_columns) == 1:
        return image_columns[0]
    if not image_columns:
        raise DatasetInputError(
            f"The dataset has no image column (columns: {', '.join(features) or 'none'}); name the column that "
            f"holds images or image paths with {option}."
        )
    raise DatasetInputError(
        f"The dataset has several image columns ({', '.join(image_columns)}); choose one with {option}."
    )


def undecoded(dataset, column: str):
    """The dataset with `column` as {"bytes", "path"} dicts, so that we decode, and can name a corrupt file. A
    column of file paths becomes one of images here too."""
    import datasets

    try:
        return dataset.cast_column(column, datasets.Image(decode=False))
    except (TypeError, ValueError, NotImplementedError) as error:  # pyarrow's cast errors derive from these
        raise DatasetInputError(f"Column {column!r} does not hold images: {first_line(error)}") from None


def open_image(encoded: dict) -> Image.Image:
    """Decode one {"bytes", "path"} cell fully (Image.open alone reads only the header)."""
    image = Image.open(io.BytesIO(encoded["bytes"])) if encoded.get("bytes") else Image.open(encoded["path"])
    image.load()
    return image


def describe(encoded: dict, index: int) -> str:
    """How a message names a cell: its file, else its row."""
    return encoded.get("path") or f"row {index}"
