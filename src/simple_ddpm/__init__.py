"""simple_ddpm: DDPM (Ho et al. 2020) as a diffusers scheduler and pipeline, with the exact ELBO in bits/dim."""

from .hub import (
    BackgroundUploader,
    HubAccessError,
    make_hub_layout,
    prepare_repo,
    push_pipeline_folder,
    resolve_token,
)
from .model_card import write_model_card
from .pipeline_simple_ddpm import ELBOOutput, SimpleDDPMPipeline
from .scheduling_simple_ddpm import SimpleDDPMScheduler, SimpleDDPMSchedulerOutput

__version__ = "0.1.0"

__all__ = [
    "BackgroundUploader",
    "ELBOOutput",
    "HubAccessError",
    "SimpleDDPMPipeline",
    "SimpleDDPMScheduler",
    "SimpleDDPMSchedulerOutput",
    "make_hub_layout",
    "prepare_repo",
    "push_pipeline_folder",
    "resolve_token",
    "write_model_card",
]
