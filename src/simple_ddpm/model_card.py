"""The model card (README.md) of a SimpleDDPMPipeline, filled from the template `templates/model_card.md`.

The template is `model_card.md` at the root of the repository, copied into the package so that an installed
`simple-ddpm` (`simple-ddpm push`, `pipe.push_to_hub`) can fill it; a test keeps the two identical. A trained folder
gets every section from the metrics.json that training/train.py writes; a pipeline without measurements gets what
its configuration says and a line that nothing was measured.
"""

import json
import math
from pathlib import Path

from diffusers import DiffusionPipeline
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from .recommendation import SAMPLING_RECOMMENDATION

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
METRICS_NAME = "metrics.json"
CARD_TAGS = ["simple-ddpm", "diffusers:SimpleDDPMPipeline", "diffusers", "ddpm", "unconditional-image-generation"]
VARIANCE_DESCRIPTIONS = {
    "fixed_small": "fixed: the posterior's sigma~^2_t (`fixed_small`, Ho et al. 2020)",
    "fixed_large": "fixed: beta_t (`fixed_large`, Ho et al. 2020)",
    "learned_range": "learned (`learned_range`, Nichol & Dhariwal 2021): the UNet's last half of output channels "
    "interpolate log beta_t and log sigma~^2_t",
    "learned": "learned (`learned`): the UNet's last half of output channels are the log-variance",
    "analytic": "analytic (`analytic`, Bao et al. 2022): the KL-optimal sigma*^2 of each step, from the model's mean "
    "squared predicted noise G_t (`analytic_mean_squared_eps` in scheduler_config.json)",
}
TRAINING_METRICS_KEYS = ("held_out_bits_per_dim", "held_out_images", "eval_timesteps", "steps", "training")


def _card_data(repo_id: str, dataset: str | None = None, eval_results: list | None = None) -> ModelCardData:
    return ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        license="apache-2.0",
        tags=CARD_TAGS,
        datasets=[dataset] if dataset else None,
        model_name=repo_id,
        eval_results=eval_results,
    )


def objective_description(setup: dict) -> str:
    """The training objective in words, from train.py's `training` metrics (older ones lack the newer keys)."""
    if setup.get("loss_type") == "vlb":
        text = "L_vlb, the bound's terms (Nichol & Dhariwal 2021)"
    else:
        text = f"`{setup['loss_weighting']}` loss weighting"
        if setup.get("variance_type") in ("learned_range", "learned"):
            text += f" + {setup['vlb_weight']} L_vlb for the variance (L_hybrid, Nichol & Dhariwal 2021)"
    if setup.get("timestep_sampling") == "importance" and setup.get("importance_sampling_warmed_up") is False:
        text += (
            "; timesteps to be importance-sampled by the loss's second moment, but they stayed uniform: some "
            "timestep never got the 10 losses the sampler waits for"
        )
    elif setup.get("timestep_sampling") == "importance":
        text += "; timesteps importance-sampled by the loss's second moment"
    elif setup.get("timestep_sampling") == "log_normal":
        text += (
            f"; timesteps drawn with ln sigma ~ N({setup['log_normal_mean']:g}, {setup['log_normal_std']:g}^2) "
            "(EDM's noise distribution, Karras et al. 2022)"
        )
    return text


def recipe_description(setup: dict) -> str | None:
    """train.py's --recipe and the options given against it; None for runs older than recipes."""
    if "recipe" not in setup:
        return None
    text = f"`{setup['recipe']}` (train.py --recipe)"
    departures = setup.get("recipe_departures") or {}
    if departures:
        text += ", with " + ", ".join(f"--{name} {value}" for name, value in departures.items()) + " given"
    return text


# What the package's benchmark (benchmarks/bench_analytic.py, docs/fast-sampling.md) found, for the card.
ANALYTIC_ADVICE = (
    "On the package's Fashion-MNIST benchmark it lowered the bound of short chains (25 optimal steps below the "
    "1,000-step bound) but left the samples' Frechet distance where the fixed variance has it: use it for "
    "likelihoods at few steps, and DDPM's own variance for samples"
)


def analytic_description(analytic: dict | None) -> str | None:
    """The card's line on the analytic variance table (metrics.json's "analytic_variance"), or None."""
    if not analytic:
        return None
    table = (
        f"G_t = E ‖eps_theta(x_t, t)‖² / d estimated on M = {analytic['images']} training images "
        f"({analytic['network_calls']:,} network calls), in scheduler_config.json"
    )
    if analytic.get("variance_type") == "analytic":
        use = f"{table}: sampling and bounds use the KL-optimal variance of every step (Bao et al. 2022)"
    else:
        use = (
            f'{table}: `SimpleDDPMScheduler.from_config(pipe.scheduler.config, variance_type="analytic")` samples '
            'with the KL-optimal variance of every step (Bao et al. 2022); `timestep_spacing="optimal"` picks the '
            "steps"
        )
    return f"{use}. {ANALYTIC_ADVICE}"


def is_training_metrics(metrics: dict) -> bool:
    """Whether `metrics` is what training/train.py writes to metrics.json (the card needs all of it)."""
    return all(key in metrics for key in TRAINING_METRICS_KEYS)


def has_card_metrics(metrics: dict) -> bool:
    """Whether `metrics` fills a card: train.py's metrics, or a student's of training/distill.py."""
    return is_training_metrics(metrics) or "distillation" in metrics


def build_model_card(metrics: dict, repo_id: str, template_path: Path = TEMPLATE_PATH) -> ModelCard:
    """A ModelCard from the metrics.json that train.py writes: held-out bits/dim, sample grid, training setup.

    Args:
        metrics (`dict`): the parsed metrics.json.
        repo_id (`str`): the repo id (or local folder) that the usage snippet loads.
        template_path (`Path`): the Jinja template.
    """
    setup = metrics["training"]
    frechet = metrics.get("frechet_distance")

    def held_out_result(metric_type: str, metric_name: str, value: float) -> EvalResult:
        return EvalResult(
            task_type="unconditional-image-generation",
            dataset_type=setup["dataset"],
            dataset_name=setup["dataset"],
            dataset_split=setup["eval_split"],
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=round(value, 4),
        )

    eval_results = [held_out_result("bits_per_dim", "negative ELBO (bits/dim)", metrics["held_out_bits_per_dim"])]
    if frechet:
        name = f"Frechet distance ({frechet['features']}, {frechet['num_samples']} samples)"
        eval_results.append(held_out_result("frechet_distance", name, frechet["value"]))
    card_data = _card_data(
        repo_id,
        dataset=setup["dataset"],
        eval_results=eval_results,
    )
    exact = metrics["eval_timesteps"] == setup["num_train_timesteps"]
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=repo_id.rsplit("/", 1)[-1],
        repo_id=repo_id,
        dataset_id=setup["dataset"],
        bits_per_dim=metrics["held_out_bits_per_dim"],
        eval_images=metrics["held_out_images"],
        eval_timesteps_text=(
            f"all {metrics['eval_timesteps']} (exact)"
            if exact
            else f"{metrics['eval_timesteps']} of {setup['num_train_timesteps']}, stratified (unbiased estimate)"
        ),
        frechet_distance=frechet,
        analytic_text=analytic_description(metrics.get("analytic_variance")),
        class_names=metrics.get("class_names"),
        bits_per_dim_unconditional=metrics.get("held_out_bits_per_dim_unconditional"),
        sample_grid=metrics["sample_grid"],
        num_samples=metrics["num_samples"],
        num_inference_steps=metrics["num_inference_steps"],
        steps=metrics["steps"],
        images_seen=metrics["images_seen"],
        wall_time_minutes=metrics["wall_time_s"] / 60,
        objective_text=objective_description(setup),
        recipe_text=recipe_description(setup),
        sampling_recommendation=SAMPLING_RECOMMENDATION,
        variance_text=VARIANCE_DESCRIPTIONS[setup.get("variance_type", "fixed_small")],
        ema_text=f"max decay {setup['ema_max_decay']}, warmup power {setup['ema_power']}"
        if setup["use_ema"]
        else "off",
        **setup,
    )


def pipeline_model_card(pipe: DiffusionPipeline, repo_id: str, template_path: Path = TEMPLATE_PATH) -> ModelCard:
    """The card of a pipeline that comes without measurements: its configuration, and no number it cannot back."""
    size = pipe.unet.config.sample_size
    return ModelCard.from_template(
        _card_data(repo_id),
        template_path=str(template_path),
        model_name=repo_id.rsplit("/", 1)[-1],
        repo_id=repo_id,
        resolution=size if isinstance(size, int) else "x".join(map(str, size)),  # height x width
        channels=pipe.unet.config.in_channels,
        num_parameters=sum(p.numel() for p in pipe.unet.parameters()),
        num_train_timesteps=pipe.scheduler.config.num_train_timesteps,
        beta_schedule=pipe.scheduler.config.beta_schedule,
        prediction_type=pipe.scheduler.config.prediction_type,
        variance_text=VARIANCE_DESCRIPTIONS.get(
            pipe.scheduler.config.get("variance_type"),
            f"the sampler's own: this pipeline samples with {type(pipe.scheduler).__name__}",
        ),
        class_names=pipe.config.get("class_names"),
        sampling_recommendation=SAMPLING_RECOMMENDATION,
    )


def learned_guidance(distillation: dict) -> float | None:
    """The classifier-free guidance w that a student learned: its own run's --guidance_scale, else that of the run
    it continues (and so on down the chain); None if none was guided."""
    while distillation:
        if distillation.get("guidance_scale"):
            return distillation["guidance_scale"]
        distillation = distillation.get("continues")
    return None


def distilled_model_card(
    metrics: dict, pipe_config: dict, repo_id: str, template_path: Path = TEMPLATE_PATH
) -> ModelCard:
    """The card of a student of training/distill.py, from its metrics.json ("distillation", and the teacher's
    training metrics where it had them) and its pipeline's unet and scheduler configs."""
    distillation = metrics["distillation"]
    teacher = metrics.get("teacher_training") or {}
    unet, scheduler = pipe_config["unet"], pipe_config["scheduler"]
    size = unet["sample_size"]
    return ModelCard.from_template(
        _card_data(repo_id, dataset=distillation["dataset"]),
        template_path=str(template_path),
        model_name=repo_id.rsplit("/", 1)[-1],
        repo_id=repo_id,
        distillation=distillation,
        distillation_fd=metrics.get("frechet_distance"),
        distillation_guidance=learned_guidance(distillation),
        teacher_wall_time_s=teacher.get("wall_time_s"),
        model_description=(teacher.get("training") or {}).get("model_description"),
        resolution=size if isinstance(size, int) else "x".join(map(str, size)),
        channels=unet["in_channels"],
        num_parameters=pipe_config["num_parameters"],
        num_train_timesteps=scheduler["num_train_timesteps"],
        beta_schedule=scheduler["beta_schedule"],
        prediction_type=scheduler["prediction_type"],
        variance_text="none: deterministic DDIM (eta = 0) on the distilled timesteps",
        class_names=teacher.get("class_names"),
        sample_grid=metrics["sample_grid"],
        num_samples=metrics["num_samples"],
        num_inference_steps=distillation["num_inference_steps"],
        seed=distillation["seed"],
        use_ema=False,
    )


def _pipeline_config(folder: Path) -> dict:
    """The unet and scheduler configs of a saved pipeline folder, and the UNet's parameter count."""
    configs = {
        "unet": json.loads((folder / "unet" / "config.json").read_text()),
        "scheduler": json.loads((folder / "scheduler" / "scheduler_config.json").read_text()),
    }
    count = 0
    for weights in (folder / "unet").glob("*.safetensors"):
        with safe_open(weights, framework="pt") as tensors:
            count += sum(math.prod(tensors.get_slice(key).get_shape()) for key in tensors.keys())
    return configs | {"num_parameters": count}


def write_model_card(output_dir: str | Path, repo_id: str | None = None, template_path: Path = TEMPLATE_PATH) -> Path:
    """Write output_dir/README.md from output_dir/metrics.json and return its path.

    Args:
        output_dir (`str` or `Path`): a folder trained by training/train.py or distilled by training/distill.py.
        repo_id (`str`, *optional*): what the usage snippet loads; default: the folder's path. `simple-ddpm push`
            rewrites the card with the repo id it pushes to.
        template_path (`Path`): the Jinja template.

    Raises:
        `ValueError`: if metrics.json is missing or is not train.py's.
    """
    output_dir = Path(output_dir)
    metrics_path = output_dir / METRICS_NAME
    if not metrics_path.is_file():
        raise ValueError(f"{output_dir} has no {METRICS_NAME} to fill the model card from.")
    metrics = json.loads(metrics_path.read_text())
    if "distillation" in metrics:
        card = distilled_model_card(metrics, _pipeline_config(output_dir), repo_id or str(output_dir), template_path)
        card.save(output_dir / "README.md")
        return output_dir / "README.md"
    if not is_training_metrics(metrics):
        missing = ", ".join(key for key in TRAINING_METRICS_KEYS if key not in metrics)
        raise ValueError(f"{metrics_path} is not the metrics of training/train.py: it has no {missing}.")
    card = build_model_card(metrics, repo_id or str(output_dir), template_path)
    card.save(output_dir / "README.md")
    return output_dir / "README.md"
