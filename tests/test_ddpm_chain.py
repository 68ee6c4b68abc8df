"""DDPMChain: one immutable description of a chain; a respaced chain is the same process with new betas."""

import dataclasses

import numpy as np
import pytest
import torch

from simple_ddpm import DDPMChain, SimpleDDPMScheduler


def test_chain_is_immutable_and_set_timesteps_leaves_the_t_step_bound_unchanged():
    scheduler = SimpleDDPMScheduler(num_train_timesteps=20, variance_type="fixed_large")
    with pytest.raises(dataclasses.FrozenInstanceError):
        scheduler.chain.timesteps = (1, 0)
    x0 = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 2 - 1
    output = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x_t = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 7, 19])
    before = scheduler.vb_terms_bpd(output, x0, x_t, t)
    full_chain = scheduler.full_chain
    scheduler.set_timesteps(5)
    assert scheduler.full_chain is full_chain and scheduler.chain.timesteps == tuple(scheduler.timesteps.tolist())
    assert torch.equal(scheduler.vb_terms_bpd(output, x0, x_t, t), before)


def test_respaced_chain_is_a_ddpm_with_the_betas_of_its_alpha_bar_ratios():
    """Against a float64 computation from alpha_bar alone: beta'_i = 1 - alpha_bar_{t_i} / alpha_bar_{t_{i+1}}, the
    posterior of that process (Ho et al. eq. 7) and its variance beta~'_i = beta'_i (1 - alpha_bar_{t_{i+1}}) /
    (1 - alpha_bar_{t_i})."""
    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100, dtype=torch.float64), 0)
    steps = np.array([99, 70, 31, 5, 0])
    chain = DDPMChain.build(steps, alphas_cumprod, prediction_type="epsilon", variance_type="fixed_small")
    alpha_bar = [alphas_cumprod[s].item() for s in steps] + [1.0]
    for i, step in enumerate(steps):
        beta = 1 - alpha_bar[i] / alpha_bar[i + 1]
        variance = beta * (1 - alpha_bar[i + 1]) / (1 - alpha_bar[i])
        coef_x0 = alpha_bar[i + 1] ** 0.5 * beta / (1 - alpha_bar[i])
        coef_xt = (1 - beta) ** 0.5 * (1 - alpha_bar[i + 1]) / (1 - alpha_bar[i])
        c_x, c_out, row_coef_x0, row_coef_xt, std = chain.step_rows[int(step)]
        assert (row_coef_x0, row_coef_xt) == pytest.approx((coef_x0, coef_xt), rel=1e-12)
        assert std == pytest.approx(0.0 if step == 0 else variance**0.5, rel=1e-12)
        assert (c_x, c_out) == pytest.approx((alpha_bar[i] ** -0.5, (1 - alpha_bar[i]) ** 0.5), rel=1e-12)
    assert chain.second_to_last_step == 5
    assert chain.tables["on_chain"].nonzero().flatten().tolist() == sorted(steps.tolist())
