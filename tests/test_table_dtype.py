"""The float64 tables reach every device in a dtype it has: float64, or float32 where the device has none (Apple
MPS). The choice is tested with device values (no MPS needed); the float32 path is run on the CPU by choosing
float32 there, and checked against the float64 computation."""

import importlib

import pytest
import torch
from tiny_pipeline import tiny_pipeline

from simple_ddpm import SimpleDDPMScheduler
from simple_ddpm.ddpm_chain import table_dtype


@pytest.mark.parametrize(
    "device, dtype",
    [
        (torch.device("mps"), torch.float32),
        ("mps", torch.float32),
        (torch.device("mps", 0), torch.float32),
        (torch.device("cpu"), torch.float64),
        ("cuda", torch.float64),
        (torch.device("cuda", 1), torch.float64),
    ],
)
def test_tables_are_float32_only_on_devices_without_float64(device, dtype):
    assert table_dtype(device) == dtype


def test_chain_tables_gathered_in_float32_are_the_float64_tables_rounded():
    scheduler = SimpleDDPMScheduler(num_train_timesteps=50)
    t = torch.tensor([0, 7, 49])
    for name in ("alpha_bar", "coef_x0", "model_log_variance"):
        float32 = scheduler.full_chain.gather(name, t, torch.empty((), dtype=torch.float32))
        assert float32.dtype == torch.float32
        assert torch.equal(float32, scheduler.full_chain.tables[name][t].float())


def test_loss_weights_with_float32_tables_match_float64(monkeypatch):
    scheduler = SimpleDDPMScheduler(num_train_timesteps=50)
    t = torch.arange(50)
    expected = {w: scheduler.loss_weights(t, w) for w in ("elbo", "min_snr")}
    losses_module = importlib.import_module("simple_ddpm.training_losses")  # the package exports a function so named
    monkeypatch.setattr(losses_module, "table_dtype", lambda device: torch.float32)
    for weighting, weights in expected.items():
        # 1 - alpha_bar_1 = 1e-4 keeps about 3 of float32's 7 digits
        torch.testing.assert_close(scheduler.loss_weights(t, weighting), weights, rtol=1e-3, atol=0)


def test_bound_with_float32_tables_is_close_to_the_float64_bound(monkeypatch):
    pipe = tiny_pipeline()
    images = (torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0)) / 127.5 - 1).float()
    exact = pipe.elbo(images, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(importlib.import_module("simple_ddpm.elbo"), "table_dtype", lambda device: torch.float32)
    approximate = pipe.elbo(images, generator=torch.Generator().manual_seed(1))
    assert approximate.bits_per_dim.dtype == torch.float32 and exact.bits_per_dim.dtype == torch.float64
    torch.testing.assert_close(approximate.bits_per_dim.double(), exact.bits_per_dim, rtol=1e-4, atol=0)
