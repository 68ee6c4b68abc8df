"""The scheduler's pieces for editing: q(x_t' | x_t) in one draw, and the DDIM step run forwards."""

import pytest
import torch

from simple_ddpm import SimpleDDPMScheduler


def test_add_noise_between_is_the_forward_steps_composed():
    scheduler = SimpleDDPMScheduler()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    noise = torch.randn_like(x)
    for start, stop in ((-1, 0), (-1, 999), (10, 11), (100, 350), (0, 999)):
        alphas = (1 - scheduler.betas)[start + 1 : stop + 1]  # alpha_{start+2} .. alpha_{stop+1}, the steps between
        scale, variance = alphas.prod().sqrt(), 1 - alphas.prod()
        expected = scale * x + variance.sqrt() * noise
        assert torch.allclose(scheduler.add_noise_between(x, noise, start, stop), expected, rtol=1e-12, atol=1e-12)
    from_data = scheduler.add_noise(x, noise, torch.tensor([400]))
    assert torch.allclose(scheduler.add_noise_between(x, noise, -1, 400), from_data, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("start, stop", [(5, 5), (6, 5), (-2, 3), (3, 1000)])
def test_add_noise_between_refuses_steps_that_do_not_go_up(start, stop):
    with pytest.raises(ValueError, match="add_noise_between needs -1 <= timestep < to_timestep < 1000"):
        SimpleDDPMScheduler().add_noise_between(torch.zeros(1), torch.zeros(1), start, stop)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("num_inference_steps", [1000, 7])
def test_ddim_inverse_step_undoes_the_eta_zero_step_for_the_same_eps_hat(prediction_type, num_inference_steps):
    """step(eta=0) from x_t gives x_{t'} and its x0_hat, hence eps_hat; the output that reads as the same eps_hat
    at x_{t'} (the same output for Design II) takes x_{t'} back to x_t."""
    scheduler = SimpleDDPMScheduler(prediction_type=prediction_type, clip_sample=False)
    scheduler.set_timesteps(num_inference_steps)
    generator = torch.Generator().manual_seed(0)
    for t in scheduler.timesteps.tolist():
        x_t = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
        output = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
        step = scheduler.step(output, t, x_t, eta=0.0)
        a = scheduler.alphas_cumprod[t].item()
        eps_hat = (x_t - a**0.5 * step.pred_original_sample) / (1 - a) ** 0.5
        x0_read_at_next = (step.prev_sample - (1 - a) ** 0.5 * eps_hat) / a**0.5
        output_at_next = scheduler.get_target(x0_read_at_next, eps_hat, torch.tensor([t]))
        if prediction_type == "epsilon":
            assert torch.allclose(output_at_next, output, rtol=1e-9, atol=1e-9)
        back = scheduler.ddim_inverse_step(output_at_next, t, step.prev_sample)
        assert torch.allclose(back, x_t, rtol=1e-9, atol=1e-9), t
