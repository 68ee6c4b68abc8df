"""The model card: one template, filled from training's metrics.json or from a pipeline's configuration."""

import json
from pathlib import Path

from huggingface_hub import ModelCard
from tiny_pipeline import save_trained_folder, tiny_pipeline

from simple_ddpm.model_card import TEMPLATE_PATH, pipeline_model_card, write_model_card

ROOT = Path(__file__).resolve().parents[1]


def test_packaged_template_is_the_repository_root_model_card_md():
    assert TEMPLATE_PATH.read_bytes() == (ROOT / "model_card.md").read_bytes(), (
        "model_card.md at the root is the template; copy it to src/simple_ddpm/templates/model_card.md"
    )


def test_card_of_a_trained_folder_reports_its_metrics_and_loads_the_given_repo_id(tmp_path):
    save_trained_folder(tiny_pipeline(), tmp_path, bits_per_dim=5.4321)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 'from_pretrained("' + str(tmp_path) + '")' in ModelCard.load(tmp_path / "README.md").text

    card = ModelCard.load(write_model_card(tmp_path, repo_id="alice/ddpm"))

    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert {"simple-ddpm", "diffusers:SimpleDDPMPipeline"} <= set(card.data.tags)
    assert card.data.datasets == [metrics["training"]["dataset"]] and card.data.license == "apache-2.0"
    assert card.data.eval_results[0].metric_value == 5.4321 and "**5.4321**" in card.text
    assert "![Samples](samples.png)" in card.text and "| steps | 100 (1,600 images seen) |" in card.text
    assert 'SimpleDDPMPipeline.from_pretrained("alice/ddpm")' in card.text


def test_card_of_a_pipeline_without_measurements_states_its_configuration_and_claims_no_number():
    pipe = tiny_pipeline(beta_schedule="cosine", prediction_type="v_prediction")
    card = pipeline_model_card(pipe, "alice/ddpm")

    parsed = ModelCard(str(card))
    assert parsed.data.library_name == "diffusers" and "simple-ddpm" in parsed.data.tags
    assert parsed.data.eval_results is None and parsed.data.datasets is None
    assert "Not measured for this upload" in card.text and "bits/dim |" not in card.text
    assert "## Samples" not in card.text and "## Training" not in card.text
    assert f"| UNet | {sum(p.numel() for p in pipe.unet.parameters()):,} parameters |" in card.text
    assert "T = 10, `squaredcos_cap_v2` betas, predicts `v_prediction`" in card.text
    assert "at 8x8 pixels, 3 channels." in card.text


def test_card_says_when_importance_sampling_never_left_its_uniform_warm_up():
    from simple_ddpm.model_card import objective_description

    setup = {"loss_type": "vlb", "variance_type": "learned_range", "timestep_sampling": "importance"}
    active = objective_description(setup | {"importance_sampling_warmed_up": True})
    assert active.endswith("; timesteps importance-sampled by the loss's second moment")
    idle = objective_description(setup | {"importance_sampling_warmed_up": False})
    assert "they stayed uniform" in idle and "importance-sampled by" in idle
    hybrid = objective_description({"loss_weighting": "simple", "variance_type": "learned", "vlb_weight": 0.001})
    assert hybrid == "`simple` loss weighting + 0.001 L_vlb for the variance (L_hybrid, Nichol & Dhariwal 2021)"
