"""A tiny SimpleDDPMPipeline (8x8 UNet, T = 10) and the folder that training leaves behind, for fast tests."""

import json
from pathlib import Path

import torch
from diffusers import UNet2DModel

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler, write_model_card
from simple_ddpm.image_processing import image_grid


def tiny_unet(
    seed: int = 0, out_channels: int | None = None, channels: int = 3, num_class_embeds: int | None = None
) -> UNet2DModel:
    """out_channels defaults to `channels`; num_class_embeds = K + 1 makes it class-conditional (the last
    embedding: no label)."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=channels,
        out_channels=channels if out_channels is None else out_channels,
        num_class_embeds=num_class_embeds,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


def tiny_pipeline(seed: int = 0, **scheduler_config) -> SimpleDDPMPipeline:
    scheduler = SimpleDDPMScheduler(**{"num_train_timesteps": 10, "beta_end": 0.2, **scheduler_config})
    unet = tiny_unet(seed, out_channels=6 if scheduler.learns_variance else 3)  # a learned variance: 2C outputs
    pipe = SimpleDDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def training_metrics(pipe: SimpleDDPMPipeline, bits_per_dim: float = 7.25) -> dict:
    """A metrics.json as training/train.py writes it, for this pipeline."""
    config = pipe.scheduler.config
    return {
        "held_out_bits_per_dim": bits_per_dim,
        "held_out_images": 16,
        "eval_timesteps": config.num_train_timesteps,
        "steps": 100,
        "images_seen": 1600,
        "wall_time_s": 30.0,
        "sample_grid": "samples.png",
        "num_samples": 4,
        "num_inference_steps": config.num_train_timesteps,
        "skipped_images": 0,
        "training": {
            "dataset": "scikit-learn/digits",
            "eval_split": "10% of train held out",
            "resolution": pipe.unet.config.sample_size,
            "channels": pipe.unet.config.in_channels,
            "model_description": "`tiny` preset",
            "num_parameters": sum(p.numel() for p in pipe.unet.parameters()),
            "num_train_timesteps": config.num_train_timesteps,
            "beta_schedule": config.beta_schedule,
            "prediction_type": config.prediction_type,
            "loss_weighting": "simple",
            "variance_type": config.variance_type,
            "loss_type": "mse",
            "vlb_weight": 0.001,
            "timestep_sampling": "uniform",
            "learning_rate": 0.001,
            "lr_scheduler": "cosine",
            "lr_warmup_steps": 10,
            "train_batch_size": 16,
            "num_processes": 1,
            "gradient_accumulation_steps": 1,
            "total_batch_size": 16,
            "use_ema": True,
            "ema_max_decay": 0.9999,
            "ema_power": 0.75,
            "mixed_precision": "no",
            "seed": 0,
        },
    }


def save_trained_folder(pipe: SimpleDDPMPipeline, folder: Path, bits_per_dim: float = 7.25) -> None:
    """What training leaves behind: the pipeline, a sample grid, metrics.json and the card filled from it."""
    pipe.save_pretrained(folder)
    images = pipe(batch_size=4, generator=torch.Generator().manual_seed(0), num_inference_steps=2, output_type="pt")
    image_grid(images[0]).save(folder / "samples.png")
    (folder / "metrics.json").write_text(json.dumps(training_metrics(pipe, bits_per_dim), indent=2))
    write_model_card(folder)
