"""simple_ddpm: DDPM (Ho et al. 2020) as a diffusers scheduler and pipeline, with the exact ELBO in bits/dim."""

from .ddpm_chain import DDPMChain
from .feature_networks import FeatureClassifier, load_feature_classifier, save_feature_classifier
from .frechet import FeatureStatistics, frechet_distance
from .guidance import classifier_free_guidance
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
from .pipeline_simple_ddpm_editing import SimpleDDPMEditingPipeline
from .pipeline_simple_ddpm_img2img import SimpleDDPMImg2ImgPipeline
from .pipeline_simple_ddpm_inpaint import SimpleDDPMInpaintPipeline
from .pipeline_simple_ddpm_inversion import SimpleDDPMInversionPipeline
from .scheduling_simple_ddpm import SimpleDDPMScheduler, SimpleDDPMSchedulerOutput
from .timestep_samplers import LogNormalSampler, LossSecondMomentSampler, UniformSampler, create_timestep_sampler
from .training_losses import TrainingLosses, diffusion_loss, training_losses

__version__ = "0.1.0"

__all__ = [
    "BackgroundUploader",
    "DDPMChain",
    "ELBOOutput",
    "FeatureClassifier",
    "FeatureStatistics",
    "HubAccessError",
    "LogNormalSampler",
    "LossSecondMomentSampler",
    "SimpleDDPMEditingPipeline",
    "SimpleDDPMImg2ImgPipeline",
    "SimpleDDPMInpaintPipeline",
    "SimpleDDPMInversionPipeline",
    "SimpleDDPMPipeline",
    "SimpleDDPMScheduler",
    "SimpleDDPMSchedulerOutput",
    "TrainingLosses",
    "UniformSampler",
    "classifier_free_guidance",
    "create_timestep_sampler",
    "diffusion_loss",
    "frechet_distance",
    "load_feature_classifier",
    "make_hub_layout",
    "prepare_repo",
    "push_pipeline_folder",
    "resolve_token",
    "save_feature_classifier",
    "training_losses",
    "write_model_card",
]
