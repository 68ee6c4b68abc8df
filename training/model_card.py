"""The model card (README.md) of a trained pipeline folder, filled from the repository's model_card.md template."""

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "model_card.md"
METRICS_NAME = "metrics.json"
CARD_TAGS = ["simple-ddpm", "diffusers:SimpleDDPMPipeline", "diffusers", "ddpm", "unconditional-image-generation"]


def build_model_card(metrics: dict, repo_id: str, template_path: Path = TEMPLATE_PATH) -> ModelCard:
    """A ModelCard from the metrics.json that train.py writes: held-out bits/dim, sample grid, training setup."""
    setup = metrics["training"]
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        license="apache-2.0",
        tags=CARD_TAGS,
        datasets=[setup["dataset"]],
        model_name=repo_id,
        eval_results=[
            EvalResult(
                task_type="unconditional-image-generation",
                dataset_type=setup["dataset"],
                dataset_name=setup["dataset"],
                dataset_split=setup["eval_split"],
                metric_type="bits_per_dim",
                metric_name="negative ELBO (bits/dim)",
                metric_value=round(metrics["held_out_bits_per_dim"], 4),
            )
        ],
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
            else f"{metrics['eval_timesteps']} of {setup['num_train_timesteps']}, drawn at random (unbiased estimate)"
        ),
        sample_grid=metrics["sample_grid"],
        num_samples=metrics["num_samples"],
        num_inference_steps=metrics["num_inference_steps"],
        steps=metrics["steps"],
        images_seen=metrics["images_seen"],
        wall_time_minutes=metrics["wall_time_s"] / 60,
        ema_text=f"max decay {setup['ema_max_decay']}, warmup power {setup['ema_power']}"
        if setup["use_ema"]
        else "off",
        **setup,
    )


def write_model_card(output_dir: str | Path, repo_id: str | None = None, template_path: Path = TEMPLATE_PATH) -> Path:
    """Write output_dir/README.md from output_dir/metrics.json; `repo_id` (default: the folder's path) is what the
    usage snippet loads. Returns the card's path."""
    output_dir = Path(output_dir)
    metrics = json.loads((output_dir / METRICS_NAME).read_text())
    card = build_model_card(metrics, repo_id or str(output_dir), template_path)
    card.save(output_dir / "README.md")
    return output_dir / "README.md"
