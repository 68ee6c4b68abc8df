"""End-to-end runs of training/train.py on small data: the saved pipeline, exact resume, and two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from simple_ddpm import SimpleDDPMPipeline
from training.image_data import digits_dataset

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "training" / "train.py"

pytestmark = pytest.mark.slow

# Small but complete: every periodic action (samples, evaluation, checkpoints) happens during the run.
SMALL_RUN = [
    "--report_to", "none", "--max_train_samples", "96", "--train_batch_size", "16", "--num_train_timesteps", "50",
    "--lr_warmup_steps", "2", "--num_samples", "4", "--num_inference_steps", "10", "--num_eval_images", "8",
    "--eval_timesteps", "5", "--sample_every", "3", "--eval_every", "3", "--checkpointing_steps", "3",
]  # fmt: skip


def run_train(*arguments: str, launcher: tuple[str, ...] = (sys.executable,)) -> subprocess.CompletedProcess:
    result = subprocess.run([*launcher, str(TRAIN), *arguments], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def held_out_digits(count: int) -> torch.Tensor:
    """The first `count` held-out digits as x_0 in [-1, 1], recomputed from scikit-learn, not from train.py."""
    held_out = digits_dataset().train_test_split(test_size=0.1, seed=0)["test"]
    pixels = np.stack([np.asarray(image) for image in held_out[:count]["image"]])
    return torch.from_numpy(pixels).float()[:, None] / 127.5 - 1


def test_training_writes_a_loadable_pipeline_with_measured_bits_per_dim_samples_and_card(tmp_path):
    output_dir = tmp_path / "run"
    run_train(
        *SMALL_RUN, "--output_dir", str(output_dir), "--max_train_steps", "6", "--final_eval_timesteps", "7",
        "--report_to", "tensorboard", "--logging_steps", "2",
    )  # fmt: skip

    pipe = SimpleDDPMPipeline.from_pretrained(output_dir)
    assert (pipe.unet.config.sample_size, pipe.unet.config.in_channels) == (8, 1)
    assert pipe.scheduler.config.num_train_timesteps == 50
    assert (output_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    # The saved weights are the EMA of the last checkpoint's, not the raw ones.
    raw = load_file(output_dir / "checkpoint-6" / "model.safetensors")
    ema = load_file(output_dir / "checkpoint-6" / "ema.safetensors")
    saved = pipe.unet.state_dict()
    names = [name for name, _ in pipe.unet.named_parameters()]
    assert sorted(ema) == sorted(names) and all(torch.equal(saved[name], ema[name]) for name in names)
    assert any(not torch.equal(saved[name], raw[name]) for name in names)

    # metrics.json holds what the saved pipeline measures on the held-out digits, recomputed here.
    metrics = json.loads((output_dir / "metrics.json").read_text())
    bits = pipe.elbo(held_out_digits(8), generator=torch.Generator().manual_seed(0), num_timesteps=7).bits_per_dim
    assert metrics["held_out_bits_per_dim"] == pytest.approx(bits.mean().item(), rel=1e-6)
    assert (metrics["steps"], metrics["images_seen"], metrics["held_out_images"]) == (6, 6 * 16, 8)
    assert metrics["wall_time_s"] > 0

    grid = Image.open(output_dir / "samples.png")
    assert grid.size == (2 * 33 + 1, 2 * 33 + 1)  # 2x2 cells of 8x8 shown at 32x32, 1-pixel borders
    assert sorted(p.name for p in (output_dir / "samples").iterdir()) == ["step_0000003.png"]

    # TensorBoard got the training curves, the grids and the bits/dim.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((output_dir / "logs" / "simple-ddpm").glob("events.out.tfevents.*"))))
    events.Reload()
    scalars = {"train/loss", "train/lr", "train/grad_norm", "train/images_per_s", "eval/bits_per_dim"}
    assert scalars <= set(events.Tags()["scalars"]) and "samples" in events.Tags()["images"]
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6]
    assert events.Scalars("eval/bits_per_dim")[-1].value == pytest.approx(metrics["held_out_bits_per_dim"])

    card = ModelCard.load(output_dir / "README.md")
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert {"simple-ddpm", "diffusers:SimpleDDPMPipeline"} <= set(card.data.tags)
    assert card.data.datasets == ["scikit-learn/digits"]
    assert card.data.eval_results[0].metric_value == round(metrics["held_out_bits_per_dim"], 4)
    assert f"{metrics['held_out_bits_per_dim']:.4f}" in card.text and "![Samples](samples.png)" in card.text
    assert f'SimpleDDPMPipeline.from_pretrained("{output_dir}")' in card.text


def read_json(path: Path):
    return json.loads(path.read_text())


def as_earlier_checkpoint(folder: Path) -> None:
    """Rewrite a checkpoint as simple_ddpm wrote them before the counters and the EMA left pickles: accelerate's
    custom_checkpoint_0.pkl (TrainingProgress) and custom_checkpoint_1.pkl (the EMA's state_dict)."""
    progress = json.loads((folder / "training_progress.json").read_text())
    ema = json.loads((folder / "ema.json").read_text())
    config = json.loads((folder / "unet_config.json").read_text())
    names = [name for name, _ in UNet2DModel.from_config(config).named_parameters()]
    shadow = load_file(folder / "ema.safetensors")
    torch.save(progress, folder / "custom_checkpoint_0.pkl")
    torch.save(ema | {"shadow_params": [shadow[name] for name in names]}, folder / "custom_checkpoint_1.pkl")
    for name in ("training_progress.json", "ema.json", "ema.safetensors"):
        (folder / name).unlink()


@pytest.mark.parametrize("written_as", ["current", "earlier"])
def test_stopped_and_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, written_as):
    # Random flips, gradient accumulation and periodic sampling all draw randomness that must not drift.
    common = [*SMALL_RUN, "--max_train_steps", "6", "--random_flip", "--gradient_accumulation_steps", "2"]
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    run_train(*common, "--output_dir", str(uninterrupted), "--checkpoints_total_limit", "5")
    # The run as it stood after step 3, copied elsewhere, then continued with the same command.
    resumed.mkdir()
    subprocess.run(["cp", "-r", str(uninterrupted / "checkpoint-3"), str(resumed)], check=True)
    if written_as == "earlier":
        as_earlier_checkpoint(resumed / "checkpoint-3")
    result = run_train(*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")
    assert "Resumed from" in result.stderr and "at step 3" in result.stderr

    for name in ("model.safetensors", "ema.safetensors"):
        first = load_file(uninterrupted / "checkpoint-6" / name)
        second = load_file(resumed / "checkpoint-6" / name)
        assert sorted(first) == sorted(second) and all(torch.equal(first[key], second[key]) for key in first)
    first = load_file(uninterrupted / "unet" / "diffusion_pytorch_model.safetensors")
    second = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(first[key], second[key]) for key in first)
    first_ema, second_ema = (read_json(run / "checkpoint-6" / "ema.json") for run in (uninterrupted, resumed))
    assert first_ema == second_ema and first_ema["optimization_step"] == 6
    progress = "checkpoint-6/training_progress.json"
    first_state, second_state = (read_json(run / progress) for run in (uninterrupted, resumed))
    assert (
        (first_state["global_step"], first_state["images_seen"])
        == (second_state["global_step"], second_state["images_seen"])
        == (6, 6 * 32)
    )
    # Sanity: training moved the weights, so equality is not that of two untouched models.
    start = load_file(uninterrupted / "checkpoint-3" / "model.safetensors")
    assert any(not torch.equal(start[key], first[key]) for key in start)


class RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_pickle_that_would_run_code_is_refused_unopened(tmp_path):
    output_dir = tmp_path / "out"
    run_train(*SMALL_RUN, "--max_train_steps", "2", "--checkpointing_steps", "2", "--output_dir", str(output_dir))
    as_earlier_checkpoint(output_dir / "checkpoint-2")
    marker = tmp_path / "code-ran"
    torch.save({"global_step": RunsCode(marker)}, output_dir / "checkpoint-2" / "custom_checkpoint_0.pkl")

    result = subprocess.run(
        [sys.executable, str(TRAIN), *SMALL_RUN, "--max_train_steps", "4"]
        + ["--output_dir", str(output_dir), "--resume_from_checkpoint", "latest"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: custom_checkpoint_0.pkl in the checkpoint holds more than tensors")
    assert not marker.exists()


def test_streamed_run_resumes_to_the_same_weights(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):  # 10x14 colour images: resized to 8x11, then cropped at random to 8x8
        Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    common = [
        *SMALL_RUN, "--train_data_dir", str(folder), "--streaming", "--shuffle_buffer_size", "16",
        "--resolution", "8", "--crop", "random", "--random_flip", "--max_train_steps", "6",
    ]  # fmt: skip
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    run_train(*common, "--output_dir", str(uninterrupted))
    # 32 streamed training images (8 held out) make 2 batches of 16 per pass: steps 4-6 are in passes 2 and 3.
    run_train(*common, "--output_dir", str(resumed), "--resume_from_checkpoint", str(uninterrupted / "checkpoint-3"))
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert (metrics["steps"], metrics["training"]["channels"], metrics["training"]["resolution"]) == (6, 3, 8)
    first = load_file(uninterrupted / "unet" / "diffusion_pytorch_model.safetensors")
    second = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(first[key], second[key]) for key in first)


# `accelerate launch --multi_gpu` starts the processes with torchrun; without GPUs they join over gloo.
TWO_PROCESSES = (
    *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
    *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
)


def test_two_processes_split_each_batch_and_the_main_one_saves(tmp_path):
    output_dir = tmp_path / "run"
    launcher = (*TWO_PROCESSES, str(Path(__file__).parent / "ddp_release_check.py"))
    result = run_train(*SMALL_RUN, "--output_dir", str(output_dir), "--max_train_steps", "4", launcher=launcher)
    # Both processes freed the DDP-wrapped UNet before the process group (else one may hang at exit, holding the GIL).
    for rank in (0, 1):
        assert f"rank {rank}: 0 DDP modules alive at end_training" in result.stderr, result.stderr[-3000:]
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["training"]["num_processes"] == 2
    assert metrics["images_seen"] == 4 * 16 * 2
    assert (output_dir / "checkpoint-3" / "random_states_1.pkl").is_file()  # each process saved its own RNG
    SimpleDDPMPipeline.from_pretrained(output_dir)


def test_learned_variance_run_with_importance_sampling_resumes_bitwise_and_saves_what_it_is(tmp_path):
    # T = 5 lets every timestep fill its history of 10 losses within the first steps: the importance draws and
    # their weights, not the uniform warm-up, are what the resumed run must reproduce.
    common = [
        *SMALL_RUN, "--max_train_steps", "6", "--num_train_timesteps", "5", "--num_inference_steps", "5",
        "--eval_timesteps", "3", "--gradient_accumulation_steps", "2", "--variance_type", "learned_range",
        "--timestep_sampling", "importance",
    ]  # fmt: skip
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    run_train(*common, "--output_dir", str(uninterrupted), "--checkpoints_total_limit", "5")
    history = load_file(uninterrupted / "checkpoint-3" / "timestep_sampler.safetensors")
    assert torch.all(history["loss_counts"] == 10), "the sampler was still uniform at the checkpoint"
    resumed.mkdir()
    subprocess.run(["cp", "-r", str(uninterrupted / "checkpoint-3"), str(resumed)], check=True)
    result = run_train(*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")
    assert "at step 3" in result.stderr

    for name in ("model.safetensors", "ema.safetensors", "timestep_sampler.safetensors"):
        first = load_file(uninterrupted / "checkpoint-6" / name)
        second = load_file(resumed / "checkpoint-6" / name)
        assert sorted(first) == sorted(second) and all(torch.equal(first[key], second[key]) for key in first)
    start = load_file(uninterrupted / "checkpoint-3" / "timestep_sampler.safetensors")["loss_history"]
    assert not torch.equal(
        start, load_file(uninterrupted / "checkpoint-6" / "timestep_sampler.safetensors")["loss_history"]
    )

    pipe = SimpleDDPMPipeline.from_pretrained(resumed)
    assert pipe.scheduler.config.variance_type == "learned_range"
    assert (pipe.unet.config.in_channels, pipe.unet.config.out_channels) == (1, 2)
    metrics = json.loads((resumed / "metrics.json").read_text())
    bits = pipe.elbo(held_out_digits(8), generator=torch.Generator().manual_seed(0)).bits_per_dim
    assert metrics["held_out_bits_per_dim"] == pytest.approx(bits.mean().item(), rel=1e-6)
    card = ModelCard.load(resumed / "README.md").text
    assert "learned_range" in card and "0.001 L_vlb" in card and metrics["training"]["importance_sampling_warmed_up"]
    assert "; timesteps importance-sampled by the loss's second moment" in card


def test_importance_sampling_on_two_processes_learns_from_both_and_resumes_bitwise(tmp_path):
    # Each process draws its own timesteps (its own noise seed), but both must keep one loss history built from
    # the losses of both: a checkpoint holds one copy, and a resumed run gives it to both processes. Had either
    # process kept a history of its own, its draws after the resume would differ from the uninterrupted run's.
    common = [
        *SMALL_RUN, "--max_train_steps", "6", "--num_train_timesteps", "5", "--num_inference_steps", "5",
        "--eval_timesteps", "3", "--checkpointing_steps", "1", "--checkpoints_total_limit", "6",
        "--sample_every", "0", "--eval_every", "0", "--variance_type", "learned_range", "--loss_type", "vlb",
        "--timestep_sampling", "importance",
    ]  # fmt: skip
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    result = run_train(*common, "--output_dir", str(uninterrupted), launcher=TWO_PROCESSES)
    assert "timesteps are importance-sampled from here on" in result.stderr
    # After one step of 16 images per process, a history of one process's losses would count at most 16.
    first_step = load_file(uninterrupted / "checkpoint-1" / "timestep_sampler.safetensors")
    assert first_step["loss_counts"].sum() > 16, "the history did not get the losses of both processes"
    history = load_file(uninterrupted / "checkpoint-3" / "timestep_sampler.safetensors")
    assert torch.all(history["loss_counts"] == 10), "the sampler was still uniform at the checkpoint"
    resumed.mkdir()
    subprocess.run(["cp", "-r", str(uninterrupted / "checkpoint-3"), str(resumed)], check=True)
    run_train(*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest", launcher=TWO_PROCESSES)

    for name in ("model.safetensors", "ema.safetensors", "timestep_sampler.safetensors"):
        first = load_file(uninterrupted / "checkpoint-6" / name)
        second = load_file(resumed / "checkpoint-6" / name)
        assert sorted(first) == sorted(second) and all(torch.equal(first[key], second[key]) for key in first)
    assert json.loads((resumed / "metrics.json").read_text())["training"]["importance_sampling_warmed_up"]
