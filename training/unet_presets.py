"""The UNet2DModel that train.py fits: a size preset, a config file, or a pretrained model to fine-tune."""

import json
from pathlib import Path

from diffusers import UNet2DModel

from simple_ddpm.ddpm_chain import LEARNED_VARIANCE_TYPES
from training.arguments import InvalidTrainingInput

# Keyword arguments of UNet2DModel for each --model_preset; sample_size and channels come from the data.
UNET_PRESETS = {
    # ~0.7M parameters, two levels (R and R/2, attention at R/2): learns 8x8 digits in minutes on a CPU.
    "tiny": {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
        "attention_head_dim": None,
    },
    # ~6M parameters, three levels, attention at R/2: 16x16 to 32x32 grayscale or small colour datasets.
    "small": {
        "block_out_channels": (64, 128, 128),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 32,
        "attention_head_dim": None,
    },
    # Ho et al. 2020's CIFAR-10 network (35.7M parameters): four levels, two residual blocks each, self-attention
    # at 16x16 for 32x32 inputs, dropout 0.1; the layout of google/ddpm-cifar10-32.
    "ddpm-cifar10": {
        "block_out_channels": (128, 256, 256, 256),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 32,
        "norm_eps": 1e-6,
        "attention_head_dim": None,
        "downsample_padding": 0,
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "dropout": 0.1,
    },
}


def downsampling_factor(config) -> int:
    """How many times the UNet halves its input: 2 ** (levels - 1), the last level keeping its size."""
    return 2 ** (len(config["down_block_types"]) - 1)


def check_resolution(config, resolution: int) -> None:
    factor = downsampling_factor(config)
    if resolution % factor:
        raise InvalidTrainingInput(
            f"Resolution {resolution} is not divisible by {factor}, the UNet's downsampling factor "
            f"({len(config['down_block_types'])} levels); choose a multiple of {factor} with --resolution."
        )


def unet_source(name_or_path: str) -> tuple[str, dict]:
    """How to read --model_config_name_or_path: ("config", kwargs) for a config json, ("pretrained", kwargs)
    for a UNet folder, a pipeline folder (its unet/) or a Hub id."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return "config", {}
    if path.is_dir() and (path / "model_index.json").is_file():
        return "pretrained", {"subfolder": "unet"}
    if path.is_dir() and not (path / "config.json").is_file():
        raise InvalidTrainingInput(f"{name_or_path} has neither config.json nor model_index.json.")
    return "pretrained", {}


def build_unet(args, channels: int, resolution: int, num_classes: int | None = None) -> UNet2DModel:
    """A UNet2DModel for `channels` x `resolution` x `resolution` images (2 x `channels` outputs with a learned
    variance), or InvalidTrainingInput. With `num_classes` K, class-conditional: num_class_embeds = K + 1, the last
    being the no-label token."""
    out_channels = 2 * channels if args.variance_type in LEARNED_VARIANCE_TYPES else channels
    num_class_embeds = None if num_classes is None else num_classes + 1
    if args.model_config_name_or_path is None:
        config = dict(
            UNET_PRESETS[args.model_preset], sample_size=resolution, in_channels=channels, out_channels=out_channels
        )
        check_resolution(config, resolution)
        return UNet2DModel(**config, num_class_embeds=num_class_embeds)

    name = args.model_config_name_or_path
    kind, kwargs = unet_source(name)
    try:
        if kind == "config":
            config = json.loads(Path(name).expanduser().read_text())
            config.update(sample_size=resolution, in_channels=channels, out_channels=out_channels)
            config.update(num_class_embeds=num_class_embeds)
            unet = UNet2DModel.from_config(config)
        else:
            unet = UNet2DModel.from_pretrained(name, **kwargs)
    except (OSError, ValueError, TypeError, json.JSONDecodeError) as error:
        first_line = next(iter(str(error).splitlines()), type(error).__name__)
        raise InvalidTrainingInput(f"Cannot build a UNet2DModel from {name}: {first_line}") from None
    check_resolution(unet.config, resolution)
    if unet.config.in_channels != channels:
        raise InvalidTrainingInput(
            f"{name} has {unet.config.in_channels} input channels, the data {channels}; pass --num_channels "
            f"{unet.config.in_channels} to convert the images."
        )
    if unet.config.out_channels != out_channels:
        raise InvalidTrainingInput(
            f"{name} has {unet.config.out_channels} output channels; --variance_type {args.variance_type} needs "
            f"{out_channels} for {channels}-channel images (twice as many to learn the variance)."
        )
    if unet.config.num_class_embeds != num_class_embeds:
        raise InvalidTrainingInput(
            f"{name} is {describe_classes(unet.config.num_class_embeds)} and the data has "
            f"{describe_classes(num_class_embeds)}: fine-tune a model with the same classes, or train from a preset."
        )
    if unet.config.sample_size not in (resolution, None):
        unet.register_to_config(sample_size=resolution)
    return unet


def describe_classes(num_class_embeds: int | None) -> str:
    if num_class_embeds is None:
        return "unconditional (no --class_column)"
    return f"class-conditional with {num_class_embeds - 1} classes (num_class_embeds={num_class_embeds})"


def pretrained_unet_config(name_or_path: str) -> dict | None:
    """The config of the UNet to fine-tune, for defaults of --resolution and --num_channels; None for a preset."""
    kind, kwargs = unet_source(name_or_path)
    try:
        if kind == "config":
            return json.loads(Path(name_or_path).expanduser().read_text())
        return dict(UNet2DModel.load_config(name_or_path, **kwargs))
    except (OSError, ValueError, json.JSONDecodeError) as error:
        first_line = next(iter(str(error).splitlines()), type(error).__name__)
        raise InvalidTrainingInput(f"Cannot read a UNet2DModel config from {name_or_path}: {first_line}") from None
