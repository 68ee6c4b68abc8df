"""The fast path is chosen from what the hardware has, and a missing piece falls back with one warning."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from simple_ddpm import hardware

ROOT = Path(__file__).resolve().parents[1]


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (an independent source from oneDNN's own probe)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux's /proc/cpuinfo")
def test_native_bf16_on_the_cpu_is_what_the_cpu_reports():
    assert hardware.native_bf16("cpu") == bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def test_auto_precision_on_a_gpu_is_bf16_exactly_where_it_is_native(monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: device_type == "cuda")
    assert hardware.resolve_mixed_precision("auto", None, "cuda", measure=never_called).precision == "bf16"
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: False)
    assert hardware.resolve_mixed_precision("auto", "no", "cuda", measure=never_called).precision == "no"


def test_auto_precision_on_a_cpu_without_native_bf16_is_float32_unmeasured(monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: False)
    choice = hardware.resolve_mixed_precision("auto", None, "cpu", measure=never_called)
    assert choice.precision == "no" and "not native" in choice.reason


def test_a_chosen_precision_is_kept_and_not_measured(monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: True)
    assert hardware.resolve_mixed_precision("no", None, "cpu", measure=never_called).precision == "no"
    assert hardware.resolve_mixed_precision("bf16", None, "cpu", measure=never_called).precision == "bf16"
    assert hardware.resolve_mixed_precision("fp16", "bf16", "cuda", measure=never_called).precision == "fp16"
    # accelerate launch --mixed_precision or accelerate config
    assert hardware.resolve_mixed_precision("auto", "fp16", "cuda", measure=never_called).precision == "fp16"
    assert hardware.resolve_mixed_precision("auto", "bf16", "cpu", measure=never_called).precision == "bf16"


def never_called():
    raise AssertionError("an explicit or ruled precision must not be measured")


class FakeClock:
    """A clock that only the fake calls move: each call of a candidate costs its given seconds."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def calls(self, seconds: dict[str, float]) -> dict:
        def call(name):
            self.now += seconds[name]

        return {name: (lambda name=name: call(name)) for name in seconds}


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ({"no": 1.0, "bf16": 0.5}, "bf16"),
        ({"no": 1.0, "bf16": 0.94}, "bf16"),  # 6% faster: past the 5% margin
        ({"no": 1.0, "bf16": 0.97}, "no"),  # within the margin: float32, which is exact
        ({"no": 1.0, "bf16": 1.8}, "no"),  # emulated bf16
    ],
)
def test_auto_precision_off_a_gpu_is_the_measured_faster_one(seconds, expected, tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: True)  # a CPU with AVX512-BF16 or AMX
    clock = FakeClock()
    timed_calls = []

    def measure():
        timed_calls.append(1)
        return hardware.interleaved_seconds(clock.calls(seconds), rounds=3, clock=clock)

    choice = hardware.resolve_mixed_precision(
        "auto", None, "cpu", measure=lambda: hardware.measured_precision("key", measure, tmp_path / "cache.json")
    )
    assert choice.precision == expected and not choice.cached
    assert choice.seconds == pytest.approx(seconds)
    assert f"no {seconds['no'] * 1e3:.1f} ms" in choice.describe()


@pytest.mark.parametrize(("bf16", "rounds"), [(0.5, 1), (1.8, 1), (1.0, 3), (0.9, 3)])
def test_measuring_stops_after_one_round_when_the_choice_is_clear(bf16, rounds):
    clock = FakeClock()
    calls = clock.calls({"no": 1.0, "bf16": bf16})
    counted = {name: (lambda call=call: counts.append(1) or call()) for name, call in calls.items()}
    counts = []
    seconds = hardware.interleaved_seconds(counted, rounds=3, clock=clock, settled=hardware.clearly_decided)
    assert seconds == pytest.approx({"no": 1.0, "bf16": bf16})
    assert len(counts) == 2 * (1 + rounds)  # the warm-up and the rounds, one call of each precision per round


def test_a_cached_choice_is_reused_without_measuring_again(tmp_path):
    cache = tmp_path / "cache" / "precision.json"
    first = hardware.measured_precision("machine+unet+batch", lambda: {"no": 2.0, "bf16": 1.0}, cache)
    again = hardware.measured_precision("machine+unet+batch", never_called, cache)
    assert (first.precision, first.cached) == ("bf16", False)
    assert (again.precision, again.cached, again.seconds) == ("bf16", True, {"no": 2.0, "bf16": 1.0})
    other = hardware.measured_precision("another batch shape", lambda: {"no": 1.0, "bf16": 2.0}, cache)
    assert other.precision == "no" and not other.cached
    assert hardware.measured_precision("machine+unet+batch", never_called, cache).precision == "bf16"


def test_the_cache_key_tells_apart_what_the_time_depends_on():
    from diffusers import UNet2DModel

    unet = UNet2DModel(**TINY_UNET)
    key = hardware.measurement_key(unet, (8, 1, 8, 8), training=True, processes=1)
    assert key == hardware.measurement_key(UNet2DModel(**TINY_UNET), (8, 1, 8, 8), training=True, processes=1)
    assert key != hardware.measurement_key(unet, (16, 1, 8, 8), training=True, processes=1)
    assert key != hardware.measurement_key(unet, (8, 1, 8, 8), training=False, processes=1)
    assert key != hardware.measurement_key(unet, (8, 1, 8, 8), training=True, processes=2)
    assert key != hardware.measurement_key(
        UNet2DModel(**{**TINY_UNET, "attention_head_dim": 8}), (8, 1, 8, 8), training=True, processes=1
    )


TINY_UNET = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 4,
    "attention_head_dim": None,
}


@pytest.mark.parametrize("training", [True, False])
def test_measuring_leaves_the_weights_gradients_and_random_stream_untouched(training):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**TINY_UNET)
    weights = {name: value.clone() for name, value in unet.state_dict().items()}
    state = torch.get_rng_state()
    seconds = hardware.unet_seconds(unet, (2, 1, 8, 8), training=training, rounds=1)
    assert set(seconds) == {"no", "bf16"} and all(value > 0 for value in seconds.values())
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(unet.state_dict()[name], value) for name, value in weights.items())
    assert all(parameter.grad is None for parameter in unet.parameters())


def test_fused_adamw_is_offered_only_for_devices_torch_has_a_kernel_for():
    assert hardware.fused_adamw_available("cpu")
    assert not hardware.fused_adamw_available("meta")


def test_compile_without_a_cxx_compiler_is_reported_not_raised(monkeypatch):
    from torch._inductor import config

    monkeypatch.setattr(config.cpp, "cxx", ("/nonexistent/c++",))
    assert hardware.compile_unavailable_reason("cpu") == "no C++ compiler found (install g++ or set CXX)"


@pytest.mark.slow
def test_torch_compile_without_a_compiler_trains_eagerly_after_one_warning(tmp_path):
    env = {**os.environ, "CXX": "/nonexistent/c++"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "training" / "train.py"), "--output_dir", str(tmp_path), "--torch_compile"]
        + ["--max_train_steps", "2", "--train_batch_size", "8", "--num_train_timesteps", "10", "--num_samples", "1"]
        + ["--report_to", "none", "--max_train_samples", "16", "--num_eval_images", "2", "--checkpointing_steps", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line and "--torch_compile" in line]
    assert len(warnings) == 1 and "no C++ compiler found" in warnings[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert (tmp_path / "model_index.json").is_file()


def test_float32_attention_equals_diffusers_attention_and_runs_in_float32_under_bf16_autocast():
    from diffusers import UNet2DModel
    from diffusers.models.attention_processor import Attention

    from simple_ddpm.float32_attention import Float32AttnProcessor, use_float32_attention

    torch.manual_seed(0)
    unet = UNet2DModel(**{**TINY_UNET, "attention_head_dim": 4}).eval()
    attention_dtypes = []
    for module in unet.modules():
        if isinstance(module, Attention):
            module.register_forward_hook(lambda module, inputs, output: attention_dtypes.append(output.dtype))
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 500, 999])
    with torch.no_grad():
        reference = unet(x, t).sample
        with torch.autocast("cpu", dtype=torch.bfloat16):
            unet(x, t)
        assert set(attention_dtypes) == {torch.float32, torch.bfloat16}  # diffusers' processor: bf16 under autocast
        use_float32_attention(unet)
        processors = [module.processor for module in unet.modules() if isinstance(module, Attention)]
        assert processors and all(isinstance(processor, Float32AttnProcessor) for processor in processors)
        assert torch.equal(unet(x, t).sample, reference)  # without autocast: diffusers' computation, unchanged
        attention_dtypes.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours_bf16 = unet(x, t).sample.float()
        assert set(attention_dtypes) == {torch.float32}
    torch.testing.assert_close(ours_bf16, reference, rtol=0, atol=0.05)  # the convolutions are bf16


@pytest.mark.slow
def test_train_py_measures_auto_precision_once_then_reuses_the_cached_choice(tmp_path):
    """Where bf16 is native; elsewhere train.py says float32 without measuring."""
    env = {**os.environ, hardware.PRECISION_CACHE_ENV: str(tmp_path / "cache")}
    lines = []
    for run in ("first", "second"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "training" / "train.py"), "--output_dir", str(tmp_path / run)]
            + ["--max_train_steps", "1", "--train_batch_size", "8", "--num_train_timesteps", "10", "--num_samples"]
            + ["1", "--report_to", "none", "--max_train_samples", "16", "--num_eval_images", "2"]
            + ["--checkpointing_steps", "0"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        lines.append(next(line for line in result.stderr.splitlines() if "INFO train: Autocast: " in line))
    if not hardware.native_bf16("cpu"):  # nothing to measure: float32, said so, and nothing cached
        assert all(line.endswith("Autocast: no precision (bf16 is not native on this CPU)") for line in lines)
        assert not (tmp_path / "cache" / "precision.json").exists()
        return
    # The cache holds the training step's choice and the sample grid's (forward passes only).
    entries = json.loads((tmp_path / "cache" / "precision.json").read_text()).values()
    described = {}
    for entry in entries:
        assert entry["precision"] == hardware.faster_precision(entry["seconds"])
        times = f"no {entry['seconds']['no'] * 1e3:.1f} ms, bf16 {entry['seconds']['bf16'] * 1e3:.1f} ms"
        described[f"Autocast: {entry['precision']} precision (measured: {times})"] = times
    training = lines[0].split("INFO train: ")[1]
    assert training in described and len(entries) == 2
    assert lines[1].endswith(training.replace("(measured: ", "(measured earlier, cached: "))


def test_a_resumed_auto_run_keeps_the_precision_its_checkpoint_was_trained_in(tmp_path, monkeypatch):
    """A measurement at resume could differ (another machine, a deleted cache, a changed load); the resumed run is
    the uninterrupted one only in the same precision, so "auto" takes the checkpoint's and measures nothing."""
    from training import run_setup, train
    from training.checkpoints import PROGRESS_NAME, TrainingProgress, checkpoint_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(run_setup, "unet_seconds", lambda *args, **kwargs: pytest.fail("measured on resume"))
    progress = TrainingProgress()
    progress.mixed_precision = "bf16"  # e.g. measured faster on the machine that started the run
    (tmp_path / PROGRESS_NAME).write_text(json.dumps(progress.state_dict()))
    assert checkpoint_precision(tmp_path) == "bf16"
    assert checkpoint_precision(None) is None
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / PROGRESS_NAME).write_text(json.dumps({"global_step": 1, "images_seen": 8, "wall_time_s": 1}))
    assert checkpoint_precision(tmp_path / "old") is None  # saved before the precision was recorded: measured

    args = train.parse_args(["--mixed_precision", "auto"])
    choice = train.choose_precision(args, unet=torch.nn.Linear(1, 1), batch_shape=(2, 1), resumed_precision="bf16")
    assert choice.precision == "bf16" and "resumed checkpoint" in choice.reason
    args = train.parse_args(["--mixed_precision", "no"])  # an explicit choice still wins
    assert train.choose_precision(args, resumed_precision="bf16").precision == "no"


def test_runs_started_side_by_side_share_one_measurement(tmp_path):
    """Two runs that reach the measurement together: without the cache's lock each would time the contended
    machine and could choose differently (seen on a Zen 5 with native bf16); with it the second reads the first's
    choice. The first measurement is slow, so the second asks while it runs."""
    cache = tmp_path / "precision.json"
    measured, started = [], threading.Event()

    def measure(seconds: dict[str, float]):
        def timed() -> dict[str, float]:
            measured.append(seconds)
            started.set()
            time.sleep(0.5)
            return seconds

        return timed

    choices = {}
    first = threading.Thread(
        target=lambda: choices.update(
            first=hardware.measured_precision("key", measure({"no": 2.0, "bf16": 1.0}), cache)
        )
    )
    first.start()
    assert started.wait(10)
    choices["second"] = hardware.measured_precision("key", measure({"no": 1.0, "bf16": 2.0}), cache)
    first.join()
    assert measured == [{"no": 2.0, "bf16": 1.0}]
    assert (choices["first"].precision, choices["first"].cached) == ("bf16", False)
    assert (choices["second"].precision, choices["second"].cached) == ("bf16", True)


def test_an_unwritable_cache_still_measures(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    choice = hardware.measured_precision("key", lambda: {"no": 1.0, "bf16": 2.0}, blocker / "precision.json")
    assert (choice.precision, choice.cached) == ("no", False)
