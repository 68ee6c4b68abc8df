"""training/train.py --push_to_hub against the stand-in Hub of tests/fake_hub.py, run in this process.

In-process, because the stand-in replaces `simple_ddpm.hub.HfApi` in memory; accelerate's process-wide state is reset
after each run.
"""

import json
import logging

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from fake_hub import READ_TOKEN, WRITE_TOKEN, folder_files, install_fake_hub
from huggingface_hub import ModelCard

from simple_ddpm import SimpleDDPMPipeline, hub
from simple_ddpm.cli import main as simple_ddpm_main
from training import arguments as arguments_module
from training import train

TINY_RUN = [
    "--max_train_samples", "32", "--train_batch_size", "16", "--num_train_timesteps", "10", "--lr_warmup_steps", "1",
    "--num_samples", "4", "--num_inference_steps", "2", "--num_eval_images", "4", "--sample_every", "2",
    "--eval_every", "0", "--checkpointing_steps", "2", "--max_train_steps", "3",
]  # fmt: skip


@pytest.fixture
def fake_hub(monkeypatch):
    fake = install_fake_hub(monkeypatch)
    yield fake
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run_train(*arguments: str) -> int:
    """train.main's exit status."""
    try:
        train.main([*TINY_RUN, *arguments])
    except SystemExit as exit:
        return exit.code
    return 0


@pytest.mark.slow
def test_trained_folder_is_pushed_file_for_file_loads_by_repo_id_and_never_carries_the_token(
    fake_hub, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO)
    output_dir = tmp_path / "run"
    status = run_train(
        "--output_dir", str(output_dir), "--report_to", "tensorboard", "--push_to_hub",
        "--hub_model_id", "alice/ddpm-digits", "--hub_token", WRITE_TOKEN,
    )  # fmt: skip
    assert status == 0

    repo = fake_hub.repos["alice/ddpm-digits"]
    background = [repo["commits"][sha] for sha in repo["order"][1:-1]]
    assert set(background[0]) - set(repo["commits"][repo["order"][0]]) == {"samples/step_0000002.png"}
    assert {path.split("/")[0] for path in set(background[1]) - set(background[0])} == {"last-checkpoint"}
    final = fake_hub.files("alice/ddpm-digits")
    assert {
        path.removeprefix("last-checkpoint/"): data
        for path, data in final.items()
        if path.startswith("last-checkpoint/")
    } == folder_files(output_dir / "checkpoint-2")
    local = {path: data for path, data in folder_files(output_dir).items() if not path.startswith("checkpoint-")}
    assert {path: final[path] for path in local} == local  # the trained folder, file for file

    fake_hub.export_to_cache("alice/ddpm-digits", tmp_path / "cache")
    loaded = SimpleDDPMPipeline.from_pretrained("alice/ddpm-digits", cache_dir=tmp_path / "cache")
    trained = SimpleDDPMPipeline.from_pretrained(output_dir)
    for name, weight in trained.unet.state_dict().items():
        torch.testing.assert_close(loaded.unet.state_dict()[name], weight, rtol=0, atol=0)

    snapshot = tmp_path / "cache" / "models--alice--ddpm-digits" / "snapshots" / repo["branches"]["main"]
    card = ModelCard.load(snapshot / "README.md")
    metrics = json.loads(final["metrics.json"])
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert {"simple-ddpm", "diffusers:SimpleDDPMPipeline"} <= set(card.data.tags)
    assert card.data.eval_results[0].metric_value == round(metrics["held_out_bits_per_dim"], 4)
    assert f"**{metrics['held_out_bits_per_dim']:.4f}**" in card.text
    assert 'SimpleDDPMPipeline.from_pretrained("alice/ddpm-digits")' in card.text

    assert any(path.startswith("logs/") for path in final)  # TensorBoard's hparams included: the options
    assert not [path for path, data in fake_hub.all_uploaded_bytes() if WRITE_TOKEN.encode() in data]
    assert not [path for path, data in folder_files(output_dir).items() if WRITE_TOKEN.encode() in data]
    out, err = capsys.readouterr()
    assert "Pushed" in caplog.text and WRITE_TOKEN not in out + err + caplog.text


@pytest.mark.slow
def test_failed_final_push_prints_the_command_that_retries_it(fake_hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    output_dir = tmp_path / "run"
    fake_hub.fail_paths = {""}  # the final commit, to the repo's root, fails
    status = run_train(
        "--output_dir", str(output_dir), "--report_to", "none", "--push_to_hub", "--hub_model_id", "alice/ddpm"
    )
    assert status == 1
    *_, last_line = capsys.readouterr().err.rstrip("\n").split("\n")
    assert last_line.startswith("error: pushing to alice/ddpm failed (HTTP 500)")
    retry = last_line.split("retry with: ")[1]
    assert retry == f"simple-ddpm push {output_dir} alice/ddpm"

    fake_hub.fail_paths = set()
    assert simple_ddpm_main(retry.split()[1:]) == 0
    assert fake_hub.files("alice/ddpm")["metrics.json"] == (output_dir / "metrics.json").read_bytes()


@pytest.mark.parametrize(
    "token, message",
    [
        (READ_TOKEN, "error: The token of alice cannot write to alice/ddpm (HTTP 403 when creating a test branch)"),
        (None, "error: No Hugging Face token found"),
    ],
)
def test_read_only_or_missing_token_stops_the_run_in_seconds_before_any_data_or_output(
    fake_hub, tmp_path, capsys, monkeypatch, token, message
):
    hub.prepare_repo("alice/ddpm", WRITE_TOKEN)
    fake_hub.calls.clear()
    monkeypatch.setattr(train, "prepare_data", lambda *_: pytest.fail("data were read before the Hub check"))
    output_dir = tmp_path / "run"

    status = run_train(
        "--output_dir", str(output_dir), "--push_to_hub", "--hub_model_id", "alice/ddpm",
        *(["--hub_token", token] if token else []),
    )  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and READ_TOKEN not in err
    assert list(output_dir.iterdir()) == []
    assert len(fake_hub.repos["alice/ddpm"]["order"]) == 1
    assert [method for method, _ in fake_hub.calls] == (["whoami", "create_repo", "create_branch"] if token else [])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--push_to_hub"], "--push_to_hub needs --hub_model_id USER/NAME."),
        (["--hub_model_id", "alice/ddpm"], "--hub_model_id needs --push_to_hub."),
        (["--push_to_hub", "--hub_model_id", "a/b", "--hub_token", "x", "--report_to", "wandb"], "recorded by wandb"),
    ],
)
def test_hub_options_are_validated_before_anything_else(fake_hub, tmp_path, capsys, monkeypatch, arguments, message):
    monkeypatch.setattr(arguments_module, "is_wandb_available", lambda: True)
    assert run_train("--output_dir", str(tmp_path), *arguments) == 2
    assert message in capsys.readouterr().err
    assert fake_hub.calls == []
