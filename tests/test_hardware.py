"""The fast path is chosen from what the hardware has, and a missing piece falls back with one warning."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_auto_precision_is_bf16_exactly_where_it_is_native(monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: device_type == "cuda")
    assert hardware.resolve_mixed_precision("auto", None, "cuda") == "bf16"
    assert hardware.resolve_mixed_precision("auto", "no", "cpu") == "no"  # accelerate launch's default "no"


def test_a_chosen_precision_is_kept(monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: True)
    assert hardware.resolve_mixed_precision("no", None, "cpu") == "no"
    assert hardware.resolve_mixed_precision("fp16", "bf16", "cuda") == "fp16"
    assert hardware.resolve_mixed_precision("auto", "fp16", "cuda") == "fp16"  # accelerate launch --mixed_precision


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
