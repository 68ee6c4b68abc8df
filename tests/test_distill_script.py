"""training/distill.py end to end: a tiny teacher distilled into a 2-step pipeline folder, bad input refused in one
line before any training, and a run killed with SIGKILL mid-round resumed to the uninterrupted student, bitwise."""

import json
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from fake_hub import READ_TOKEN, WRITE_TOKEN, install_fake_hub
from reliability_runs import ONE_PROCESS, TWO_PROCESSES, Run, assert_equal, load_any, partial_saves
from tiny_pipeline import save_trained_folder, tiny_pipeline, tiny_unet

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.feature_networks import load_feature_extractor
from simple_ddpm.frechet import frechet_distance
from simple_ddpm.sample_quality import pixel_statistics, sample_statistics
from training import distill
from training.image_data import digits_dataset

ROOT = Path(__file__).resolve().parents[1]
DISTILL = ROOT / "training" / "distill.py"

pytestmark = pytest.mark.slow

UPDATES_PER_ROUND = 4
# A T = 10 teacher: its 8 trailing steps distilled to 2 in two rounds of 4 updates, a checkpoint every 2 updates.
# Float32 given, as in reliability_runs.TINY_RUN: side by side under `auto`, two runs on a CPU with native bf16 may
# measure different precisions.
TINY_DISTILLATION = [
    "--report_to", "none", "--mixed_precision", "no",
    "--teacher_steps", "8", "--num_inference_steps", "2", "--max_train_samples", "64",
    "--train_batch_size", "8", "--num_eval_images", "8", "--num_samples", "4", "--learning_rate", "1e-3",
    "--max_train_steps_per_round", str(UPDATES_PER_ROUND), "--checkpointing_steps", "2",
    "--checkpoints_total_limit", "10",
]  # fmt: skip
LAST = f"checkpoint-{2 * UPDATES_PER_ROUND}"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("teacher") / "tiny"
    save_trained_folder(tiny_pipeline(), folder)
    return folder


def distillation(output_dir: Path, teacher: Path, *extra: str, launcher=ONE_PROCESS) -> Run:
    return Run(
        output_dir, "--teacher", str(teacher), *extra, launcher=launcher, script=DISTILL, base=TINY_DISTILLATION
    )


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory) -> Path:
    """The teacher distilled by `accelerate launch training/distill.py`, as docs/distillation.md runs it."""
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "no")
    out = tmp_path_factory.mktemp("student") / "student"
    distillation(out, teacher, launcher=launcher).finish()
    return out


def test_accelerate_launch_distils_the_teacher_into_a_pipeline_that_samples_in_its_step_count(student):
    out = student
    pipe = SimpleDDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    timesteps = []
    pipe(callback_on_step_end=lambda p, i, t, tensors: timesteps.append(int(t)) or {})
    teacher_chain = [9, 8, 7, 5, 4, 3, 1, 0]  # trailing spacing, T = 10, 8 steps
    assert timesteps == teacher_chain[0::4] == pipe.scheduler.config.distilled_timesteps
    assert pipe.scheduler.config.prediction_type == "v_prediction"  # the teacher predicts epsilon
    metrics = json.loads((out / "metrics.json").read_text())["distillation"]
    assert [(r["teacher_steps"], r["student_steps"]) for r in metrics["rounds"]] == [(8, 4), (4, 2)]
    card = (out / "README.md").read_text()
    assert "distilled from the teacher **tiny (a local folder)** into a deterministic 2-step sampler" in card
    assert "pipe(batch_size=16).images  # its 2 distilled steps" in card
    assert (out / "samples.png").is_file()


def test_a_distilled_student_continues_on_the_data_it_was_distilled_on_and_keeps_its_history(student, tmp_path):
    """A 2-step student distilled on by one more round (2 -> 1): by default on the data its own metrics name (here
    a saved dataset folder, not the quickstart's digits), recording the round before it and the teacher's
    training, and its card says whose student its teacher was."""
    teacher = tmp_path / "two-step"
    shutil.copytree(student, teacher)
    data = tmp_path / "data"
    datasets.DatasetDict({"train": digits_dataset().select(range(100))}).save_to_disk(data)
    metrics = json.loads((teacher / "metrics.json").read_text())
    metrics["distillation"]["dataset"] = str(data)
    (teacher / "metrics.json").write_text(json.dumps(metrics))

    out = tmp_path / "one-step"
    distillation(out, teacher, "--teacher_steps", "2", "--num_inference_steps", "1").finish()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["distillation"]["dataset"] == str(data)
    assert saved["distillation"]["continues"] == metrics["distillation"]
    assert saved["teacher_training"] == metrics["teacher_training"]  # the trained model at the root of the chain
    assert SimpleDDPMPipeline.from_pretrained(out).scheduler.config.distilled_timesteps == [9]
    card = (out / "README.md").read_text()
    assert "(predicts `v_prediction`), itself a 2-step student of tiny (a local folder) |" in card


def test_a_students_push_to_hub_uploads_its_distilled_card_and_metrics(student, monkeypatch):
    hub = install_fake_hub(monkeypatch)
    SimpleDDPMPipeline.from_pretrained(student).push_to_hub("alice/student", token=WRITE_TOKEN)
    files = hub.files("alice/student")
    card = files["README.md"].decode()
    assert "into a deterministic 2-step sampler by progressive distillation" in card and "## Distillation" in card
    assert files["metrics.json"] == (student / "metrics.json").read_bytes()
    assert str(student.parent).encode() not in files["metrics.json"]  # no local path in a pushed repo


def test_distill_push_to_hub_checks_access_first_and_pushes_the_student_with_its_card(teacher, tmp_path, monkeypatch):
    hub = install_fake_hub(monkeypatch)
    out = tmp_path / "student"
    push = ["--push_to_hub", "--hub_model_id", "alice/student", "--checkpointing_steps", "0"]
    try:
        with pytest.raises(SystemExit) as exit_info:  # a read-only token: refused before any update
            distill.main([*TINY_DISTILLATION, "--teacher", str(teacher), "--output_dir", str(out), *push,
                          "--hub_token", READ_TOKEN])  # fmt: skip
        assert exit_info.value.code == 2 and "alice/student" not in hub.repos
        assert not (out / "model_index.json").exists() and not list(out.glob("checkpoint-*"))
        distill.main([*TINY_DISTILLATION, "--teacher", str(teacher), "--output_dir", str(out), *push,
                      "--hub_token", WRITE_TOKEN])  # fmt: skip
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    files = hub.files("alice/student")
    assert files["metrics.json"] == (out / "metrics.json").read_bytes()
    assert (
        files["unet/diffusion_pytorch_model.safetensors"]
        == (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    )
    card = files["README.md"].decode()
    assert 'SimpleDDPMPipeline.from_pretrained("alice/student")' in card and "## Distillation" in card
    assert all(WRITE_TOKEN.encode() not in content for content in files.values())


def test_the_students_and_teachers_frechet_distances_are_measured_recomputed_and_on_the_card(teacher, tmp_path):
    from test_train_fid import classifier_file

    features = classifier_file(tmp_path / "classifier.safetensors", in_channels=3)
    out = tmp_path / "student"
    options = ["--fid_num_samples", "6", "--fid_features", str(features), "--checkpointing_steps", "0"]
    distillation(out, teacher, *options).finish()

    # recomputed from the saved folders and the 8 held-out digits (scikit-learn's, as RGB), not from distill.py
    extractor = load_feature_extractor(str(features))
    held_out = digits_dataset().train_test_split(test_size=0.1, seed=0)["test"]
    pixels = np.stack([np.asarray(image.convert("RGB")) for image in held_out[:8]["image"]])
    reference = pixel_statistics(extractor, torch.from_numpy(pixels).permute(0, 3, 1, 2), batch_size=8, progress=False)

    def distance(pipe, steps, **kwargs):
        samples = sample_statistics(
            pipe, extractor, 6, batch_size=8, num_inference_steps=steps, progress=False, **kwargs
        )
        return frechet_distance(samples, reference)

    measured = json.loads((out / "metrics.json").read_text())["frechet_distance"]
    student = SimpleDDPMPipeline.from_pretrained(out)
    trailing = SimpleDDPMPipeline.from_pretrained(teacher)
    trailing.scheduler = SimpleDDPMScheduler.from_config(trailing.scheduler.config, timestep_spacing="trailing")
    assert measured["student"] == pytest.approx(distance(student, 2), rel=1e-5)
    assert measured["teacher_ddim"]["8"] == pytest.approx(distance(trailing, 8, eta=0.0), rel=1e-5)
    assert measured["teacher_ddim"]["2"] == pytest.approx(distance(trailing, 2, eta=0.0), rel=1e-5)
    assert (measured["num_samples"], measured["reference_images"]) == (6, 8)
    card = (out / "README.md").read_text()
    assert f"| Frechet distance | student **{measured['student']:.2f}** at its 2 steps; the teacher's DDIM " in card


def conditional_teacher(folder: Path) -> SimpleDDPMPipeline:
    pipe = SimpleDDPMPipeline(
        unet=tiny_unet(num_class_embeds=11),
        scheduler=tiny_pipeline().scheduler,
        class_names=[str(d) for d in range(10)],
    )
    save_trained_folder(pipe, folder)
    return pipe


def test_a_class_conditional_teacher_distils_with_its_labels(tmp_path):
    teacher = tmp_path / "conditional"
    pipe = conditional_teacher(teacher)
    distillation(tmp_path / "student", teacher, "--checkpointing_steps", "0").finish()
    student = SimpleDDPMPipeline.from_pretrained(tmp_path / "student")
    student.set_progress_bar_config(disable=True)
    assert student.num_classes == 10 and student.config.class_names == pipe.config.class_names
    images = student(class_labels=["3", "7"], guidance_scale=1.0, output_type="pt").images
    assert images.shape == (2, 3, 8, 8) and torch.isfinite(images).all()


def test_a_guided_distillation_teaches_the_guided_targets_and_says_so_on_the_card(tmp_path):
    """--guidance_scale 2 on a class-conditional teacher: the student differs from the unguided one (the same seed
    and data), and metrics.json and the card record the guidance it learned, also after one more round."""
    teacher = tmp_path / "conditional"
    conditional_teacher(teacher)
    plain, guided = tmp_path / "plain", tmp_path / "guided"
    distillation(plain, teacher, "--checkpointing_steps", "0").finish()
    distillation(guided, teacher, "--checkpointing_steps", "0", "--guidance_scale", "2").finish()
    weights = "unet/diffusion_pytorch_model.safetensors"
    first, second = load_any(plain / weights), load_any(guided / weights)
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert json.loads((guided / "metrics.json").read_text())["distillation"]["guidance_scale"] == 2.0
    card = "| guidance | learned: the targets of the chain's first round are the teacher guided with w = 2.0"
    assert card in (guided / "README.md").read_text() and card not in (plain / "README.md").read_text()
    further = tmp_path / "further"
    distillation(further, guided, "--teacher_steps", "2", "--num_inference_steps", "1").finish()
    assert json.loads((further / "metrics.json").read_text())["distillation"]["guidance_scale"] == 0.0
    assert card in (further / "README.md").read_text()  # the guidance its teacher learned


def test_guidance_of_an_unconditional_teacher_or_with_unlabelled_frechet_samples_is_refused(teacher, tmp_path, capsys):
    error = refused(tmp_path, capsys, teacher, "--guidance_scale", "2")
    assert error == "error: --guidance_scale 2 guides a class-conditional teacher; this one has no classes."
    for extra, message in [
        (["--guidance_scale", "-1"], "error: --guidance_scale must be a finite number >= 0, got -1.0."),
        (["--guidance_scale", "1", "--fid_num_samples", "4"], "error: --fid_num_samples draws without labels"),
    ]:  # usage errors, before the teacher is read
        with pytest.raises(SystemExit) as exit_info:
            distill.parse_args(["--teacher", str(teacher), "--output_dir", str(tmp_path / "out"), *extra])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1]


def refused(tmp_path, capsys, teacher: Path, *extra: str) -> str:
    out = tmp_path / "out"
    argv = [*TINY_DISTILLATION, "--teacher", str(teacher), "--output_dir", str(out), *extra]
    with pytest.raises(SystemExit) as exit_info:
        distill.main(argv)
    assert exit_info.value.code == 2
    assert not (out / "model_index.json").exists() and not list(out.glob("checkpoint-*"))
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ")
    return error


def test_a_learned_variance_teacher_is_refused_in_one_line(tmp_path, capsys):
    folder = tmp_path / "learned"
    save_trained_folder(tiny_pipeline(variance_type="learned_range"), folder)
    assert "The teacher learns its variance (learned_range)" in refused(tmp_path, capsys, folder)


def test_a_step_count_that_does_not_halve_the_teachers_chain_is_refused_in_one_line(teacher, tmp_path, capsys):
    error = refused(tmp_path, capsys, teacher, "--num_inference_steps", "3")
    assert "--num_inference_steps 3 must be the teacher's 8 steps halved one or more times" in error


def test_a_folder_that_is_not_a_pipeline_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    error = refused(tmp_path, capsys, tmp_path / "empty")
    assert error == f"error: --teacher {tmp_path / 'empty'} is not a pipeline folder: it has no model_index.json."


def assert_same_distillation_state(expected: Path, actual: Path) -> None:
    """The last checkpoint (student, Adam, the round's teacher, RNG, counters) and the saved student, bitwise."""
    names = sorted(p.name for p in (expected / LAST).iterdir())
    assert names == sorted(p.name for p in (actual / LAST).iterdir())
    assert {"model.safetensors", "optimizer.bin", distill.TEACHER_WEIGHTS_NAME} <= set(names)
    for name in names:
        if name == distill.ROUNDS_NAME:  # seconds, which differ; the rounds must not
            first, second = ([(r["teacher_steps"], r["updates"]) for r in json.loads((run / LAST / name).read_text())]
                             for run in (expected, actual))  # fmt: skip
        else:
            first, second = load_any(expected / LAST / name), load_any(actual / LAST / name)
        if name == "training_progress.json":  # the wall time differs, the counters must not
            first.pop("wall_time_s"), second.pop("wall_time_s")
        assert_equal(first, second, f"{LAST}/{name}")
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert_equal(load_any(expected / weights), load_any(actual / weights), weights)


def test_a_distillation_killed_mid_round_resumes_to_the_uninterrupted_student(teacher, tmp_path):
    uninterrupted = distillation(tmp_path / "uninterrupted", teacher)  # beside the killed run
    output_dir = tmp_path / "run"
    checkpoint, delay = random.choice((2, 4, 6)), random.uniform(0, 0.5)  # 4 ends round 1
    killed = distillation(output_dir, teacher)
    killed.wait_for(output_dir / f"checkpoint-{checkpoint}")
    time.sleep(delay)
    assert killed.process.poll() is None, "the run ended before it could be killed"
    killed.kill_all(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    resumed = distillation(output_dir, teacher, "--resume_from_checkpoint", "latest").finish()
    assert "Resumed from" in resumed.output() and partial_saves(output_dir) == []
    print(f"killed {delay:.2f} s after checkpoint-{checkpoint}")  # shown if the comparison fails
    assert_same_distillation_state(uninterrupted.finish().output_dir, output_dir)
    student = SimpleDDPMPipeline.from_pretrained(output_dir)
    assert torch.isfinite(next(student.unet.parameters())).all()


def test_two_processes_distil_and_a_killed_two_process_run_resumes_to_the_uninterrupted_student(teacher, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` (gloo on the CPU): each process its share of the batch, the
    launcher and both workers killed at once, resumed bitwise to the uninterrupted two-process student."""
    # the uninterrupted run through tests/ddp_release_check.py: both processes free the DDP-wrapped student before
    # the process group (else one may hang at exit; see training/run_setup.py's end_processes)
    check = Path(__file__).parent / "ddp_release_check.py"
    uninterrupted = Run(
        tmp_path / "uninterrupted", "--teacher", str(teacher), launcher=TWO_PROCESSES, script=check,
        base=(str(DISTILL), *TINY_DISTILLATION),
    )  # fmt: skip
    output_dir = tmp_path / "run"
    killed = distillation(output_dir, teacher, launcher=TWO_PROCESSES)
    killed.wait_for(output_dir / "checkpoint-2")
    assert killed.process.poll() is None, "the run ended before it could be killed"
    killed.kill_all(signal.SIGKILL)
    killed.wait()
    distillation(output_dir, teacher, "--resume_from_checkpoint", "latest", launcher=TWO_PROCESSES).finish()
    assert partial_saves(output_dir) == []
    assert_same_distillation_state(uninterrupted.finish().output_dir, output_dir)
    for rank in (0, 1):
        assert f"rank {rank}: 0 DDP modules alive at end_training" in uninterrupted.output()
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (output_dir / LAST).iterdir()}
    metrics = json.loads((output_dir / "metrics.json").read_text())["distillation"]
    assert metrics["num_processes"] == 2 and metrics["images_seen"] == 2 * UPDATES_PER_ROUND * 8 * 2
    student = SimpleDDPMPipeline.from_pretrained(output_dir)
    assert student.scheduler.config.distilled_timesteps == metrics["timesteps"] and len(metrics["timesteps"]) == 2


def test_hub_options_without_push_to_hub_are_a_usage_error(teacher, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        distill.parse_args(["--teacher", str(teacher), "--output_dir", str(tmp_path), "--hub_model_id", "alice/s"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("error: --hub_model_id needs --push_to_hub.")


def test_one_frechet_sample_is_a_usage_error(teacher, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        distill.parse_args(["--teacher", str(teacher), "--output_dir", str(tmp_path), "--fid_num_samples", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("error: --fid_num_samples must be 0 (none) or at least 2, got 1.")


def test_a_feature_network_that_does_not_load_is_refused_in_one_line_before_distilling(teacher, tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    error = refused(tmp_path, capsys, teacher, "--fid_num_samples", "4", "--fid_features", str(missing))
    assert error.startswith("error: --fid_features: ") and str(missing) in error
