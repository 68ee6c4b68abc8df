"""Sampling precision: "auto" is the measured-faster one (cached), an explicit one is kept, and bf16 autocast
samples equal float32 ones within a tolerance on a fixed seed."""

import pytest
import torch
from diffusers import UNet2DModel

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm import pipeline_simple_ddpm as pipeline_module
from simple_ddpm.cli import main


def attention_unet(attention_head_dim: int | None = 4) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=attention_head_dim,
    )


@pytest.fixture
def pipe():
    pipeline = SimpleDDPMPipeline(unet=attention_unet(), scheduler=SimpleDDPMScheduler(num_train_timesteps=50))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def measurements(monkeypatch, tmp_path):
    """Fake UNet timings (seconds per precision) in a fresh cache; records every batch shape measured."""
    monkeypatch.setenv("SIMPLE_DDPM_CACHE", str(tmp_path / "cache"))
    measured = []

    class Timings:
        seconds = {"no": 1.0, "bf16": 0.5}
        shapes = measured

    def fake_unet_seconds(unet, batch_shape, training, channels_last=False, rounds=3):
        assert training is False
        measured.append(tuple(batch_shape))
        return dict(Timings.seconds)

    monkeypatch.setattr(pipeline_module, "unet_seconds", fake_unet_seconds)
    monkeypatch.setattr(pipeline_module, "native_bf16", lambda device_type: True)  # AVX512-BF16 or AMX
    return Timings


def autocast_states(pipe) -> list[bool]:
    """Whether each UNet call of the next sampling runs under CPU autocast."""
    states = []
    pipe.unet.register_forward_pre_hook(lambda module, inputs: states.append(torch.is_autocast_enabled("cpu")))
    return states


def sample(pipe, **kwargs) -> torch.Tensor:
    return pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="pt", **kwargs).images


def test_bf16_samples_equal_float32_samples_within_tolerance_on_a_fixed_seed(pipe):
    float32 = sample(pipe, batch_size=4, mixed_precision="no")
    bf16 = sample(pipe, batch_size=4, mixed_precision="bf16")
    assert bf16.dtype == torch.float32
    assert not torch.equal(bf16, float32)  # bf16 did run
    torch.testing.assert_close(bf16, float32, rtol=0, atol=0.03)  # pixels in [0, 1]


def test_auto_takes_the_measured_faster_precision_once_per_batch_shape(pipe, measurements):
    states = autocast_states(pipe)
    sample(pipe, batch_size=2)
    assert states == [True] * 10 and measurements.shapes == [(2, 1, 8, 8)]
    measurements.seconds = {"no": 1.0, "bf16": 2.0}  # would now choose float32: the cached choice is reused
    states.clear()
    sample(pipe, batch_size=2)
    assert states == [True] * 10 and measurements.shapes == [(2, 1, 8, 8)]
    states.clear()
    sample(pipe, batch_size=3)  # another batch shape is measured
    assert states == [False] * 10 and measurements.shapes == [(2, 1, 8, 8), (3, 1, 8, 8)]


def test_an_explicit_precision_is_kept_and_not_measured(pipe, measurements):
    states = autocast_states(pipe)
    sample(pipe, batch_size=2, mixed_precision="no")
    assert states == [False] * 10
    measurements.seconds = {"no": 0.5, "bf16": 1.0}
    states.clear()
    sample(pipe, batch_size=2, mixed_precision="bf16")
    assert states == [True] * 10 and measurements.shapes == []


def test_a_unet_with_bfloat16_weights_runs_as_it_is(pipe, measurements):
    states = autocast_states(pipe.to(dtype=torch.bfloat16))
    sample(pipe, batch_size=2)
    assert states == [False] * 10 and measurements.shapes == []


def test_an_unknown_precision_is_refused(pipe):
    with pytest.raises(ValueError, match="Unknown mixed_precision 'fp16'; valid values are: auto, no, bf16."):
        sample(pipe, mixed_precision="fp16")


def test_the_sample_command_samples_in_the_precision_asked(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    outputs = {}
    for precision in ("no", "bf16"):
        outputs[precision] = tmp_path / f"{precision}.png"
        command = ["sample", str(tmp_path / "pipe"), "--output", str(outputs[precision]), "--num-images", "2"]
        assert main([*command, "--steps", "3", "--device", "cpu", "--mixed-precision", precision]) == 0
    assert outputs["no"].read_bytes() != outputs["bf16"].read_bytes()


def test_auto_is_float32_without_measuring_where_bf16_is_not_native(pipe, measurements, monkeypatch):
    monkeypatch.setattr(pipeline_module, "native_bf16", lambda device_type: False)  # emulated bf16, e.g. Ice Lake
    states = autocast_states(pipe)
    sample(pipe, batch_size=2)
    assert states == [False] * 10 and measurements.shapes == []
