"""Networks that map 8-bit images to the features a Frechet distance compares.

- `FeatureClassifier`: a small convolutional classifier of one's own, trained on the data; its penultimate layer
  gives the features. It is stored as one safetensors file: the weights, and in the header's metadata
  {"format": "simple-ddpm-feature-classifier", "config": JSON of the constructor's arguments}
  (`save_feature_classifier`, `load_feature_classifier`). Its name for cached statistics is the file's SHA-256.
- Inception-v3 (`InceptionFeatures`): FID as the literature reports it, the 2048 pool3 features of the
  TensorFlow Inception graph (weights "2015-12-05", Heusel et al.'s TTUR code) with TensorFlow 1.x's bilinear
  resize to 299 x 299, as ported by torch-fidelity (the `fid` extra: `pip install -e '.[fid]'`). Its weights are
  downloaded on first use into torch's hub cache.

Every extractor takes uint8 pixels (B, C, H, W) and returns float64 features (B, D).
"""

import hashlib
import json
import urllib.error
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

FEATURE_CLASSIFIER_FORMAT = "simple-ddpm-feature-classifier"
INCEPTION = "inception"  # the name --features takes for Inception-v3


class FeatureNetworkError(ValueError):
    """A feature network that cannot be loaded or fetched; reported as one line."""


class FeatureClassifier(nn.Module):
    """A small convolutional classifier of images in [0, 1]; `features` is its penultimate layer.

    Each stage is a 3x3 convolution with stride 2 and SiLU; then global average pooling, a linear layer of
    `feature_dim` units with SiLU (the features), and a linear layer to `num_classes` logits.

    Args:
        in_channels (`int`): 1 (grayscale), 3 or 4.
        image_size (`int`): the side of the square images it was trained on.
        num_classes (`int`): classes of the training labels.
        widths (`list[int]`, defaults to [32, 64, 128]): channels of the convolution stages.
        feature_dim (`int`, defaults to 128): size of the features.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        widths: list[int] | tuple[int, ...] = (32, 64, 128),
        feature_dim: int = 128,
    ):
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "image_size": image_size,
            "num_classes": num_classes,
            "widths": list(widths),
            "feature_dim": feature_dim,
        }
        layers, channels = [], in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.SiLU()]
            channels = width
        self.stages = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(channels, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer's activations (B, feature_dim) for images in [0, 1], shape (B, C, H, W)."""
        return self.embed(self.stages(images * 2 - 1).mean((2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.features(images))


def save_feature_classifier(model: FeatureClassifier, path: str | Path) -> None:
    """Write the classifier's weights and configuration to one safetensors file."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {"format": FEATURE_CLASSIFIER_FORMAT, "config": json.dumps(model.config)}
    save_file(tensors, str(path), metadata=metadata)


def load_feature_classifier(path: str | Path) -> FeatureClassifier:
    """The classifier saved by `save_feature_classifier` at `path`, in eval mode."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FeatureNetworkError(f"--features {path}: no such file (expected 'inception' or a .safetensors file).")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise FeatureNetworkError(f"{path} is not a safetensors file: {error}") from None
    if metadata.get("format") != FEATURE_CLASSIFIER_FORMAT:
        raise FeatureNetworkError(
            f"{path} is not a feature classifier: its metadata has format={metadata.get('format')!r}, expected "
            f"{FEATURE_CLASSIFIER_FORMAT!r} (write it with simple_ddpm.feature_networks.save_feature_classifier)."
        )
    try:
        model = FeatureClassifier(**json.loads(metadata["config"]))
        model.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FeatureNetworkError(f"{path} does not hold a valid feature classifier: {first}") from None
    return model.eval().requires_grad_(False)


class ClassifierFeatures:
    """Features of a `FeatureClassifier` file; images must have its channels and size."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        self.model = load_feature_classifier(path).to(device)
        self.device = device
        self.channels = self.model.config["in_channels"]
        self.image_size = self.model.config["image_size"]
        self.name = f"classifier-sha256:{hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:16]}"

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        images = pixels.to(self.device).float() / 255
        return self.model.features(images).double().cpu().numpy()


def inception_weights(url: str, hub_dir: str | Path | None = None) -> Path:
    """The Inception weights file at `url`, from torch's hub cache ($TORCH_HOME/hub/checkpoints), downloaded there
    when missing. Without network: one line naming the file and where to put it."""
    folder = Path(hub_dir or torch.hub.get_dir()) / "checkpoints"
    path = folder / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise FeatureNetworkError(
            f"Could not download the Inception-v3 FID weights {url} ({reason}); fetch that file on a machine with "
            f"network and put it at {path} (or set TORCH_HOME), or measure with --features CLASSIFIER.safetensors."
        ) from None
    return path


class InceptionFeatures:
    """The 2048 pool3 features of the TensorFlow FID Inception-v3, as torch-fidelity ports it (3 channels; a
    grayscale image is repeated, an alpha channel dropped; resized to 299 x 299 inside)."""

    name = "inception-v3-compat-2048"
    channels = 3
    image_size = None  # any size

    def __init__(self, device: str | torch.device = "cpu"):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
        except ImportError as error:
            raise FeatureNetworkError(
                f"Inception-v3 features need torch-fidelity, which does not import here ({error}); "
                "pip install -e '.[fid]' in simple_ddpm's checkout (torch-fidelity needs torchvision), or measure "
                "with --features CLASSIFIER.safetensors."
            ) from None
        weights = inception_weights(URL_INCEPTION_V3)
        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights)
        ).to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        pixels = pixels.to(self.device)
        pixels = pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels[:, :3]
        (features,) = self.model(pixels.contiguous())
        return features.double().cpu().numpy()


def load_feature_extractor(
    features: str, device: str | torch.device = "cpu"
) -> ClassifierFeatures | InceptionFeatures:
    """`features`: "inception", or the path of a `FeatureClassifier` safetensors file."""
    return InceptionFeatures(device) if features == INCEPTION else ClassifierFeatures(features, device)
