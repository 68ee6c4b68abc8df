"""A tiny SimpleDDPMPipeline (8x8 UNet, T = 10) and the folder that training leaves behind, for fast tests."""

import json
from pathlib import Path

import torch
from diffusers import UNet2DModel
from huggingface_hub import ModelCard, ModelCardData

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler


def tiny_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


def tiny_pipeline(seed: int = 0, **scheduler_config) -> SimpleDDPMPipeline:
    scheduler = SimpleDDPMScheduler(**{"num_train_timesteps": 10, "beta_end": 0.2, **scheduler_config})
    pipe = SimpleDDPMPipeline(unet=tiny_unet(seed), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_trained_folder(pipe: SimpleDDPMPipeline, folder: Path) -> None:
    """What training leaves behind: the pipeline, a card and the metrics."""
    pipe.save_pretrained(folder)
    card = ModelCard.from_template(
        ModelCardData(library_name="diffusers", tags=["simple-ddpm"], pipeline_tag="unconditional-image-generation")
    )
    card.save(folder / "README.md")
    (folder / "metrics.json").write_text(json.dumps({"test_bits_per_dim": 7.25}))
