"""Fashion-MNIST from Debian's `dataset-fashion-mnist` IDX files as a `datasets` folder (never committed).

apt-get install dataset-fashion-mnist
python benchmarks/fashion_mnist.py            # writes benchmarks/_work/fashion_mnist (train 60k, test 10k)
"""

import argparse
import gzip
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

IDX_DIR = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's format: magic, big-endian dims, then uint8 data) as an array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(idx_dir: Path = IDX_DIR) -> DatasetDict:
    if not (idx_dir / "train-images-idx3-ubyte.gz").exists():
        raise FileNotFoundError(
            f"No Fashion-MNIST IDX files in {idx_dir}: run `apt-get install dataset-fashion-mnist`."
        )
    features = Features({"image": Image(), "label": ClassLabel(names=LABELS)})
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(idx_dir / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(idx_dir / f"{prefix}-labels-idx1-ubyte.gz")
        splits[split] = Dataset.from_dict({"image": list(images), "label": labels.tolist()}, features=features)
    return DatasetDict(splits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "_work" / "fashion_mnist")
    args = parser.parse_args()
    dataset = load_fashion_mnist()
    dataset.save_to_disk(str(args.output))
    print(f"Saved {dataset} to {args.output}")


if __name__ == "__main__":
    main()
