"""Training and held-out images for train.py, read with `datasets`, decoded and resized once.

Every image is decoded, converted to the model's channel count and resized a single time (a `datasets.map`
whose output `datasets` caches on disk for file-backed datasets) and kept in memory as uint8 pixels, ~C*R*R bytes
per image. Batches are then index lookups into that tensor, so two CPU cores spend their time in the UNet, not in
PIL. Only `--streaming` decodes on the fly, once per pass, since its data need not fit in memory.
"""

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node

from simple_ddpm.image_datasets import (
    UNREADABLE_IMAGE_ERRORS,
    describe,
    find_image_column,
    first_line,
    is_saved_dataset,
    open_image,
    undecoded,
)
from simple_ddpm.image_processing import is_grayscale, to_pixels
from training.arguments import InvalidTrainingInput

logger = logging.getLogger(__name__)

DIGITS_DATASET_ID = "scikit-learn/digits"  # how the card names the embedded default (sklearn.datasets.load_digits)
INSPECTED_IMAGES = 64  # images whose mode and size decide the default channels and resolution
# Above this, a resolution taken from the first image (a folder of photos) is refused: it is rarely meant, and a
# 512-pixel UNet at the quickstart's preset and budget trains for days. --resolution states it.
LARGEST_INFERRED_RESOLUTION = 64
CORRUPT_EXAMPLES_SHOWN = 5


@dataclass
class PreparedImages:
    """What train.py needs from the data.

    `train` holds uint8 pixels: one (N, C, R, R) tensor, or with `--crop random` a list of (C, H, W) tensors with
    min(H, W) = R, cropped per batch. With `--streaming` it is None and `stream` yields decoded examples instead.
    `eval` is the fixed held-out subset, uint8 (M, C, R, R), center-cropped.
    With --class_column, `train_labels` and `eval_labels` hold the class index of each image (int64, aligned with
    `train` and `eval`; None with --streaming, whose examples carry their label) and `class_names` the K classes.
    """

    train: torch.Tensor | list[torch.Tensor] | None
    stream: datasets.IterableDataset | None
    eval: torch.Tensor
    channels: int
    resolution: int
    dataset_id: str
    num_skipped: int = 0
    train_labels: torch.Tensor | None = None
    eval_labels: torch.Tensor | None = None
    class_names: list[str] | None = None
    class_column: str | None = None


def digits_dataset() -> datasets.Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits (values 0..16) as 8-bit grayscale images, with labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    return datasets.Dataset.from_dict({"image": list(pixels), "label": digits.target.tolist()}, features=features)


def load_splits(args) -> tuple[datasets.DatasetDict | datasets.IterableDatasetDict, str]:
    """All splits of the chosen dataset, and the id the model card names it by."""
    if not (args.dataset_name or args.train_data_dir):
        return datasets.DatasetDict({"train": digits_dataset()}), DIGITS_DATASET_ID
    name = args.dataset_name or args.train_data_dir
    path = Path(name).expanduser()
    try:
        if args.dataset_name and is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path))
            if args.streaming:
                loaded = _to_iterable(loaded)
        elif args.train_data_dir:
            loaded = datasets.load_dataset(
                "imagefolder", data_dir=args.train_data_dir, cache_dir=args.cache_dir, streaming=args.streaming
            )
        else:
            loaded = datasets.load_dataset(
                args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir, streaming=args.streaming
            )
    except datasets.data_files.EmptyDatasetError as error:
        raise InvalidTrainingInput(f"Dataset {name} is empty: {first_line(error)}") from None
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
        raise InvalidTrainingInput(f"Dataset {name} not found: {first_line(error)}") from None
    except (OSError, ValueError) as error:
        raise InvalidTrainingInput(f"Cannot load the dataset {name}: {first_line(error)}") from None
    if isinstance(loaded, datasets.Dataset | datasets.IterableDataset):
        loaded = type_of_dict(loaded)({args.split: loaded})
    return loaded, name if args.dataset_name else path.name


def type_of_dict(dataset: datasets.Dataset | datasets.IterableDataset) -> type:
    return datasets.IterableDatasetDict if isinstance(dataset, datasets.IterableDataset) else datasets.DatasetDict


def _to_iterable(loaded: datasets.Dataset | datasets.DatasetDict):
    if isinstance(loaded, datasets.DatasetDict):
        return datasets.IterableDatasetDict({split: ds.to_iterable_dataset() for split, ds in loaded.items()})
    return loaded.to_iterable_dataset()


def pick_split(splits, split: str, dataset_id: str):
    if split not in splits:
        raise InvalidTrainingInput(f"{dataset_id} has no split {split!r}; its splits are: {', '.join(splits)}.")
    return splits[split]


def find_class_column(features: datasets.Features | None, class_column: str | None) -> tuple[str | None, list | None]:
    """The label column that --class_column names ("auto": the dataset's only ClassLabel column) and its class names
    (None for an integer column: the classes are 0..max); (None, None) without --class_column."""
    if class_column is None:
        return None, None
    if features is None:
        raise InvalidTrainingInput(f"--class_column {class_column}: the dataset does not declare its columns' types.")
    if class_column == "auto":
        found = [name for name, feature in features.items() if isinstance(feature, datasets.ClassLabel)]
        if len(found) != 1:
            columns = ", ".join(f"{name} ({describe_feature(feature)})" for name, feature in features.items())
            raise InvalidTrainingInput(
                f"--class_column auto needs exactly one ClassLabel column, found {len(found) or 'none'}; name the "
                f"label column with --class_column NAME. Columns: {columns}."
            )
        class_column = found[0]
    if class_column not in features:
        raise InvalidTrainingInput(
            f"--class_column {class_column}: no such column; the columns are: {', '.join(features)}."
        )
    feature = features[class_column]
    if isinstance(feature, datasets.ClassLabel):
        return class_column, list(feature.names)
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        return class_column, None
    raise InvalidTrainingInput(
        f"--class_column {class_column} is not a label column: it holds {describe_feature(feature)}; give a "
        "ClassLabel or integer column."
    )


def describe_feature(feature) -> str:
    if isinstance(feature, datasets.ClassLabel):
        return f"ClassLabel of {feature.num_classes}"
    return feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__


def check_labels(labels: torch.Tensor, num_classes: int, column: str, split: str) -> None:
    """Every label must be a class index in [0, K); a ClassLabel's -1 (no label) is refused too."""
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise InvalidTrainingInput(
            f"--class_column {column}: {len(bad)} {split} label(s) out of range, e.g. {int(bad[0])}; valid labels "
            f"are 0..{num_classes - 1}."
        )


def infer_channels_and_resolution(examples: list[dict], args) -> tuple[int, int]:
    """--num_channels and --resolution, or from the data: 1 channel if every inspected image is grayscale (so
    digits stay 1-channel instead of tripled to RGB), and the shorter side of the first image."""
    channels, resolution = args.num_channels, args.resolution
    if channels is not None and resolution is not None:
        return channels, resolution
    images = []
    for i, encoded in enumerate(examples):
        try:
            images.append(open_image(encoded))
        except UNREADABLE_IMAGE_ERRORS:
            logger.warning("Cannot read image %s while inspecting the data.", describe(encoded, i))
    if not images:
        raise InvalidTrainingInput(f"No readable images among the first {len(examples)} of the dataset.")
    if channels is None:
        channels = 1 if all(is_grayscale(image) for image in images) else 3
    if resolution is None:
        resolution = min(images[0].size)
        if resolution > LARGEST_INFERRED_RESOLUTION:
            raise InvalidTrainingInput(
                f"No --resolution: the first image's shorter side is {resolution} pixels, so the run would train at "
                f"{resolution} x {resolution}; pass --resolution (e.g. 32 or 64, or {resolution} if you mean it)."
            )
    return channels, resolution


def decode_batch(
    batch: dict,
    indices: list[int],
    column: str,
    channels: int,
    resolution: int,
    crop: bool,
    label_column: str | None = None,
) -> dict:
    """datasets.map function: each image to uint8 pixels (bytes and shape), with its label when `label_column` is
    given; unreadable ones are flagged, not raised."""
    out = {"pixels": [], "height": [], "width": [], "corrupt": []}
    if label_column is not None:
        out["class_label"] = batch[label_column]
    for encoded, index in zip(batch[column], indices, strict=True):
        try:
            pixels = to_pixels(open_image(encoded), channels, resolution, crop=crop)
            out["corrupt"].append(None)
        except UNREADABLE_IMAGE_ERRORS as error:
            pixels = np.zeros((channels, 0, 0), np.uint8)
            out["corrupt"].append(f"{describe(encoded, index)} ({first_line(error)})")
        out["pixels"].append(pixels.tobytes())
        out["height"].append(pixels.shape[1])
        out["width"].append(pixels.shape[2])
    return out


def decode_all(
    dataset: datasets.Dataset,
    column: str,
    channels: int,
    resolution: int,
    crop: bool,
    num_proc: int | None,
    label_column: str | None = None,
) -> tuple[torch.Tensor | list[torch.Tensor], list[str], torch.Tensor | None]:
    """Decode and resize every image once; returns the pixels, a description of each unreadable image, and the
    labels of the readable ones (None without `label_column`)."""
    decoded = dataset.map(
        decode_batch,
        batched=True,
        with_indices=True,
        fn_kwargs={
            "column": column,
            "channels": channels,
            "resolution": resolution,
            "crop": crop,
            "label_column": label_column,
        },
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc="Decoding and resizing images (once)",
    )
    corrupt = [c for c in decoded["corrupt"] if c is not None]
    if corrupt:
        decoded = decoded.filter(lambda flag: flag is None, input_columns="corrupt")
    heights, widths = decoded["height"], decoded["width"]
    images = [
        torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(channels, h, w)
        for raw, h, w in zip(decoded["pixels"], heights, widths, strict=True)
    ]
    labels = torch.tensor(decoded["class_label"], dtype=torch.long) if label_column is not None else None
    if len(set(heights)) <= 1 and len(set(widths)) <= 1 and images:
        return torch.stack(images), corrupt, labels
    return images, corrupt, labels


def warn_corrupt(corrupt: list[str], split: str) -> None:
    if corrupt:
        shown = "; ".join(corrupt[:CORRUPT_EXAMPLES_SHOWN]) + (" ..." if len(corrupt) > CORRUPT_EXAMPLES_SHOWN else "")
        warnings.warn(f"Skipped {len(corrupt)} unreadable image(s) in the {split} data: {shown}", stacklevel=2)


def prepare_images(args) -> PreparedImages:
    """Load, split, decode and resize the data as the options say, or raise InvalidTrainingInput."""
    splits, dataset_id = load_splits(args)
    train = pick_split(splits, args.split, dataset_id)
    column = find_image_column(train.features, args.image_column)
    label_column, class_names = find_class_column(train.features, args.class_column)
    train = undecoded(train, column)
    if args.streaming:
        return prepare_stream(args, splits, train, column, dataset_id, label_column, class_names)

    if len(train) == 0:
        raise InvalidTrainingInput(f"The {args.split!r} split of {dataset_id} is empty.")
    if args.eval_split:
        held_out = undecoded(pick_split(splits, args.eval_split, dataset_id), column)
    else:
        if len(train) < 2:
            raise InvalidTrainingInput(f"{dataset_id} has a single image: nothing to hold out for evaluation.")
        parts = train.train_test_split(test_size=args.eval_fraction, seed=args.seed)
        train, held_out = parts["train"], parts["test"]
    if args.max_train_samples is not None and args.max_train_samples < len(train):
        train = train.shuffle(seed=args.seed).select(range(args.max_train_samples))
    held_out = held_out.select(range(min(args.num_eval_images, len(held_out))))

    inspected = train.select(range(min(INSPECTED_IMAGES, len(train))))[column]
    channels, resolution = infer_channels_and_resolution(inspected, args)
    random_crop = args.crop == "random"
    train_pixels, corrupt, train_labels = decode_all(
        train, column, channels, resolution, not random_crop, args.preprocessing_num_workers, label_column
    )
    warn_corrupt(corrupt, "training")
    eval_pixels, eval_corrupt, eval_labels = decode_all(
        held_out, column, channels, resolution, True, args.preprocessing_num_workers, label_column
    )
    warn_corrupt(eval_corrupt, "held-out")
    if len(train_pixels) == 0:
        raise InvalidTrainingInput(f"No readable training images in {dataset_id} ({len(corrupt)} unreadable).")
    if len(eval_pixels) == 0:
        raise InvalidTrainingInput(f"No readable held-out images in {dataset_id}.")
    if label_column is not None:
        if class_names is None:  # an integer column: classes 0..max
            check_labels(torch.cat([train_labels, eval_labels]), 2**62, label_column, "training or held-out")
            class_names = [str(k) for k in range(int(torch.cat([train_labels, eval_labels]).max()) + 1)]
        check_labels(train_labels, len(class_names), label_column, "training")
        check_labels(eval_labels, len(class_names), label_column, "held-out")
    return PreparedImages(
        train=train_pixels,
        stream=None,
        eval=eval_pixels,
        channels=channels,
        resolution=resolution,
        dataset_id=dataset_id,
        num_skipped=len(corrupt) + len(eval_corrupt),
        train_labels=train_labels,
        eval_labels=eval_labels,
        class_names=class_names,
        class_column=label_column,
    )


def prepare_stream(
    args,
    splits,
    train: datasets.IterableDataset,
    column: str,
    dataset_id: str,
    label_column: str | None = None,
    class_names: list[str] | None = None,
) -> PreparedImages:
    """Streaming: the held-out images are --eval_split's first --num_eval_images, or the stream's first ones
    (then skipped for training); training examples are decoded as they arrive, with their label in "label"."""
    if label_column is not None and class_names is None:
        raise InvalidTrainingInput(
            f"--class_column {label_column} with --streaming must be a ClassLabel column: the classes of an integer "
            "column are not known before the stream has been read."
        )
    if args.eval_split:
        held_out = undecoded(pick_split(splits, args.eval_split, dataset_id), column)
    else:
        held_out, train = train.take(args.num_eval_images), train.skip(args.num_eval_images)
    held_out_rows = list(held_out.take(args.num_eval_images))
    held_out_examples = [example[column] for example in held_out_rows]
    if not held_out_examples:
        raise InvalidTrainingInput(f"The {args.split!r} stream of {dataset_id} is empty.")
    channels, resolution = infer_channels_and_resolution(held_out_examples[:INSPECTED_IMAGES], args)
    eval_list, eval_labels, corrupt = [], [], []
    for i, encoded in enumerate(held_out_examples):
        try:
            eval_list.append(torch.from_numpy(to_pixels(open_image(encoded), channels, resolution)))
            if label_column is not None:
                eval_labels.append(held_out_rows[i][label_column])
        except UNREADABLE_IMAGE_ERRORS as error:
            corrupt.append(f"{describe(encoded, i)} ({first_line(error)})")
    warn_corrupt(corrupt, "held-out")
    if args.max_train_samples is not None:
        train = train.take(args.max_train_samples)
    labels = None
    if label_column is not None:
        labels = torch.tensor(eval_labels, dtype=torch.long)
        check_labels(labels, len(class_names), label_column, "held-out")
    kept = {column: "image"} | ({label_column: "label"} if label_column is not None else {})
    stream = train.select_columns(list(kept))
    if any(old != new for old, new in kept.items()):
        stream = stream.rename_columns({old: "__" + new for old, new in kept.items()})
        stream = stream.rename_columns({"__" + new: new for new in kept.values()})
    return PreparedImages(
        train=None,
        stream=stream,
        eval=torch.stack(eval_list),
        channels=channels,
        resolution=resolution,
        dataset_id=dataset_id,
        num_skipped=len(corrupt),
        eval_labels=labels,
        class_names=class_names,
        class_column=label_column,
    )


def epoch_order(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the training images in `epoch`; a function of (seed, epoch) alone, so a resumed run
    recomputes it instead of restoring it."""
    return torch.randperm(num_images, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def batches_per_epoch(num_images: int, batch_size: int, num_processes: int) -> int:
    """Full global batches per epoch (the remainder is dropped; a new order each epoch drops different images)."""
    return num_images // (batch_size * num_processes)


def epoch_batches(
    num_images: int, batch_size: int, seed: int, epoch: int, process_index: int, num_processes: int, start: int = 0
) -> Iterator[torch.Tensor]:
    """Indices of this process's batches in `epoch`, from batch `start` on: global batch b is
    order[b*B*P : (b+1)*B*P] and process p takes the p-th slice of B."""
    order = epoch_order(num_images, seed, epoch)
    global_batch = batch_size * num_processes
    for b in range(start, batches_per_epoch(num_images, batch_size, num_processes)):
        first = b * global_batch + process_index * batch_size
        yield order[first : first + batch_size]


def training_batches(
    data: PreparedImages, args, process_index: int, num_processes: int, first_batch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """This process's uint8 batches (B, C, R, R) with their labels (B,) (None without --class_column), epoch after
    epoch, from micro-batch `first_batch` on (0 for a
    new run). In memory, batch b of epoch e is fixed by (seed, e, b) alone, so a resumed run continues with the
    very batch an uninterrupted run would have taken."""
    if data.stream is not None:
        yield from streamed_batches(data, args, process_index, num_processes, first_batch)
        return
    random_crop = args.crop == "random"
    per_epoch = batches_per_epoch(len(data.train), args.train_batch_size, num_processes)
    epoch, start = divmod(first_batch, per_epoch)
    while True:
        for indices in epoch_batches(
            len(data.train), args.train_batch_size, args.seed, epoch, process_index, num_processes, start
        ):
            images = data.train[indices] if isinstance(data.train, torch.Tensor) else [data.train[i] for i in indices]
            labels = None if data.train_labels is None else data.train_labels[indices]
            yield crop_and_flip(images, data.resolution, random_crop, args.random_flip), labels
        epoch, start = epoch + 1, 0


def streamed_batches(
    data: PreparedImages, args, process_index: int, num_processes: int, first_batch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Batches decoded as they arrive from this process's shard of the shuffled stream (a new order each epoch).

    A resumed run replays the stream and skips, without decoding, the examples of the batches already taken;
    this is exact when every image of the stream is readable (an unreadable one is skipped with a warning)."""
    shard = split_dataset_by_node(
        data.stream.shuffle(seed=args.seed, buffer_size=args.shuffle_buffer_size),
        rank=process_index,
        world_size=num_processes,
    )
    batch_size, random_crop = args.train_batch_size, args.crop == "random"
    batches_to_skip, epoch = first_batch, 0
    labelled = data.class_names is not None
    while True:
        shard.set_epoch(epoch)
        batch, labels, count = [], [], 0
        for count, example in enumerate(shard, start=1):
            if count <= batches_to_skip * batch_size:
                continue
            try:
                image = open_image(example["image"])
            except UNREADABLE_IMAGE_ERRORS as error:
                warnings.warn(
                    f"Skipped an unreadable image: {describe(example['image'], count)} ({error})", stacklevel=2
                )
                continue
            batch.append(torch.from_numpy(to_pixels(image, data.channels, data.resolution, crop=False)))
            labels.append(example["label"] if labelled else 0)
            if len(batch) == batch_size:
                label_tensor = None
                if labelled:
                    label_tensor = torch.tensor(labels, dtype=torch.long)
                    check_labels(label_tensor, len(data.class_names), data.class_column, "training")
                yield crop_and_flip(batch, data.resolution, random_crop, args.random_flip), label_tensor
                batch, labels = [], []
        if count == 0:
            raise InvalidTrainingInput("The training stream is empty.")
        batches_to_skip, epoch = max(0, batches_to_skip - count // batch_size), epoch + 1


def crop_and_flip(
    images: torch.Tensor | list[torch.Tensor], resolution: int, random_crop: bool, flip: bool
) -> torch.Tensor:
    """uint8 (B, C, R, R) from a batch of uint8 images, cropped (at random or at the center) and flipped at
    random; randomness from torch's global generator, which checkpoints save and restore."""
    if random_crop or not isinstance(images, torch.Tensor):
        cropped = []
        for image in images:
            height, width = image.shape[-2:]
            if random_crop:
                top = int(torch.randint(height - resolution + 1, ()))
                left = int(torch.randint(width - resolution + 1, ()))
            else:
                top, left = (height - resolution) // 2, (width - resolution) // 2
            cropped.append(image[:, top : top + resolution, left : left + resolution])
        images = torch.stack(cropped)
    if flip:
        flipped = torch.rand(images.shape[0]) < 0.5
        images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
    return images


def drop_class_labels(labels: torch.Tensor, probability: float, null_label: int) -> torch.Tensor:
    """Each label replaced by the no-label token with `probability` (classifier-free guidance's training, Ho &
    Salimans 2022 Algorithm 1), drawn from torch's global generator, which checkpoints save: a resumed run drops
    the same labels."""
    dropped = torch.rand(labels.shape, device=labels.device) < probability
    return torch.where(dropped, torch.full_like(labels, null_label), labels)
