"""What a failed or refused save leaves behind: the final pipeline swapped in whole or not at all, a full disk
and non-finite weights ending the run in one line with the last checkpoint intact, fp16 refused on a CPU."""

import errno
import os
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch
from reliability_runs import FAULTY_TRAIN, load_any, partial_saves, run
from safetensors.torch import load_file
from tiny_pipeline import tiny_pipeline

from simple_ddpm import SimpleDDPMPipeline
from training.atomic_save import SaveRefused, remove_partial_saves, save_pipeline_atomically
from training.checkpoints import list_checkpoints

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing catches it, so the files stay as a killed process leaves them."""


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def output_dir_with_a_pipeline(tmp_path) -> Path:
    """An output folder holding a saved pipeline beside a checkpoint and samples, as training leaves it."""
    output_dir = tmp_path / "run"
    (output_dir / "checkpoint-2").mkdir(parents=True)
    (output_dir / "checkpoint-2" / "model.safetensors").write_bytes(b"kept as is")
    (output_dir / "samples.png").write_bytes(b"kept as is")
    save_pipeline_atomically(tiny_pipeline(seed=0), output_dir)
    return output_dir


def dying_writer(monkeypatch, failure: BaseException) -> None:
    """safetensors' save_file (diffusers' writer) writes half the file, then `failure` is raised."""

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(safetensors.torch.save(tensors, metadata=metadata)[:100])
        raise failure

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def test_killed_while_writing_the_final_pipeline_leaves_the_previous_one_whole(
    output_dir_with_a_pipeline, monkeypatch
):
    output_dir = output_dir_with_a_pipeline
    before = folder_bytes(output_dir)
    dying_writer(monkeypatch, Killed())
    with pytest.raises(Killed):
        save_pipeline_atomically(tiny_pipeline(seed=1), output_dir)
    monkeypatch.undo()
    assert partial_saves(output_dir) == [".partial-pipeline"]  # the half-written one, under its partial name
    assert {name: data for name, data in folder_bytes(output_dir).items() if not name.startswith(".")} == before
    loaded = SimpleDDPMPipeline.from_pretrained(output_dir)
    expected = tiny_pipeline(seed=0).unet.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in loaded.unet.state_dict().items())

    # The next run's start clears the partial; its save then replaces each component whole.
    remove_partial_saves(output_dir)
    save_pipeline_atomically(tiny_pipeline(seed=1), output_dir)
    assert partial_saves(output_dir) == []
    new = tiny_pipeline(seed=1).unet.state_dict()
    assert all(torch.equal(value, new[name]) for name, value in load_file(output_dir / WEIGHTS).items())
    assert (output_dir / "checkpoint-2" / "model.safetensors").read_bytes() == b"kept as is"
    assert (output_dir / "samples.png").read_bytes() == b"kept as is"


def test_full_disk_while_writing_the_pipeline_is_one_line_and_keeps_the_previous_one(
    output_dir_with_a_pipeline, monkeypatch
):
    output_dir = output_dir_with_a_pipeline
    before = folder_bytes(output_dir)
    dying_writer(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "unet/x.safetensors"))
    with pytest.raises(SaveRefused, match=r"^error: cannot write the pipeline to .*: No space left on device") as e:
        save_pipeline_atomically(tiny_pipeline(seed=1), output_dir)
    assert "\n" not in str(e.value) and str(e.value).endswith(f"Last good checkpoint: {output_dir / 'checkpoint-2'}.")
    assert folder_bytes(output_dir) == before  # the partial folder is gone too


def test_non_finite_weights_never_replace_a_saved_pipeline(output_dir_with_a_pipeline):
    output_dir = output_dir_with_a_pipeline
    before = folder_bytes(output_dir)
    diverged = tiny_pipeline(seed=1)
    with torch.no_grad():
        diverged.unet.conv_out.bias[0] = float("inf")
    with pytest.raises(SaveRefused, match=r"the final weights are not finite \(conv_out.bias\)"):
        save_pipeline_atomically(diverged, output_dir)
    assert folder_bytes(output_dir) == before


@pytest.mark.slow
def test_full_disk_while_checkpointing_ends_in_one_line_and_leaves_the_last_checkpoint_intact(tmp_path):
    output_dir = tmp_path / "run"
    full_disk = {"CRASH_WHILE_WRITING": "checkpoint-4/model.safetensors", "CRASH_WITH": "enospc"}
    failed = run(output_dir, script=FAULTY_TRAIN, env=full_disk, expect=1)
    assert re.fullmatch(
        rf"error: cannot write {output_dir}/checkpoint-4: No space left on device \(\S+model.safetensors\)\. "
        rf"Last good checkpoint: {output_dir}/checkpoint-2\.",
        failed.last_line(),
    )
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-2"] and partial_saves(output_dir) == []
    for file in (output_dir / "checkpoint-2").iterdir():
        load_any(file)  # whole
    assert not (output_dir / "model_index.json").exists()


@pytest.mark.slow
def test_weights_that_turn_nan_are_never_checkpointed_over_a_good_checkpoint(tmp_path):
    output_dir = tmp_path / "run"
    # Step 3's update leaves a NaN while step 3's loss was still finite: only the weight check can see it.
    failed = run(
        output_dir, "--checkpointing_steps", "1", script=FAULTY_TRAIN, env={"NAN_WEIGHTS_AFTER_STEP": "3"}, expect=1
    )
    assert failed.last_line() == (
        f"error: the weights are not finite (conv_in.weight) at checkpoint-3; not saving them. "
        f"Last good checkpoint: {output_dir / 'checkpoint-2'}."
    )
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-1", "checkpoint-2"]
    assert partial_saves(output_dir) == [] and not (output_dir / "model_index.json").exists()
    weights = load_file(output_dir / "checkpoint-2" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.slow
def test_mixed_precision_fp16_on_a_cpu_is_refused_before_any_work(tmp_path):
    failed = run(tmp_path / "run", "--mixed_precision", "fp16", expect=2)
    assert failed.last_line() == (
        "error: --mixed_precision fp16 needs a GPU and this run is on the CPU; use --mixed_precision bf16 or no."
    )
    assert "Decoding" not in failed.output()
