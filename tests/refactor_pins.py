"""Values that a restructure of the package must leave bitwise unchanged, on fixed seeds.

`compute_pins()` draws them from the public API only (samples, bounds, add_noise, loss weights, training losses,
single steps, DDIM inversion, optimal timesteps). `python tests/refactor_pins.py` writes them to
tests/data/refactor_pins.pt; the stored file was written by running it on main at 3db6cc7, before issue 27's
restructure, so tests/test_refactor_pins.py compares today's code with that code.
"""

from pathlib import Path

import torch

from simple_ddpm import SimpleDDPMScheduler, training_losses

PINS_PATH = Path(__file__).parent / "data" / "refactor_pins.pt"
T = 10
# A made-up table of G_t (mean squared predicted noise), one value per timestep, for the analytic variance.
MEAN_SQUARED_EPS = [0.2 + 0.07 * t for t in range(T)]
SCHEDULERS = {
    "fixed_small": {},
    "fixed_large": {"variance_type": "fixed_large"},
    "learned_range": {"variance_type": "learned_range"},
    "learned": {"variance_type": "learned"},
    "analytic": {"variance_type": "analytic", "analytic_mean_squared_eps": MEAN_SQUARED_EPS},
    "analytic_optimal": {
        "variance_type": "analytic",
        "analytic_mean_squared_eps": MEAN_SQUARED_EPS,
        "timestep_spacing": "optimal",
    },
    "sample_threshold": {"prediction_type": "sample", "thresholding": True, "sample_max_value": 1.5},
    "v_zero_snr": {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "beta_schedule": "cosine"},
}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(seed: int) -> torch.Tensor:
    """Two 3x8x8 images on the 8-bit grid in [-1, 1]."""
    levels = torch.randint(0, 256, (2, 3, 8, 8), generator=_generator(seed))
    return levels.double() / 127.5 - 1


def compute_pins() -> dict[str, torch.Tensor]:
    from tiny_pipeline import tiny_pipeline

    pins = {}
    for name, config in SCHEDULERS.items():
        pipe = tiny_pipeline(**config)
        scheduler = pipe.scheduler
        for steps in (T, 4):
            for eta in (1.0, 0.0) if name in ("fixed_small", "analytic") else (1.0,):
                image = pipe(
                    batch_size=2, generator=_generator(1), num_inference_steps=steps, eta=eta, output_type="pt"
                )
                pins[f"{name}/sample/{steps}/{eta}"] = image.images
        x0 = _images(2)
        pins[f"{name}/elbo/full"] = pipe.elbo(x0, generator=_generator(3)).bits_per_dim
        pins[f"{name}/elbo/strata"] = pipe.elbo(x0, generator=_generator(3), num_timesteps=3).denoising
        chain = pipe.elbo(x0, generator=_generator(3), num_inference_steps=4)
        pins[f"{name}/elbo/chain"] = torch.cat([chain.bits_per_dim, chain.denoising.flatten(), chain.prior])
        timesteps = torch.tensor([0, 3, 9, 5])
        x0 = torch.randn(4, 3, 8, 8, generator=_generator(4))
        noise = torch.randn(4, 3, 8, 8, generator=_generator(5))
        pins[f"{name}/add_noise/32"] = scheduler.add_noise(x0, noise, timesteps)
        pins[f"{name}/add_noise/64"] = scheduler.add_noise(x0.double(), noise.double(), timesteps)
        for weighting in ("simple", "elbo", "min_snr"):
            if weighting == "elbo" and name == "v_zero_snr":
                continue
            pins[f"{name}/loss_weights/{weighting}"] = scheduler.loss_weights(timesteps, weighting, 5.0)
        channels = 6 if scheduler.learns_variance else 3
        output = torch.randn(4, channels, 8, 8, generator=_generator(6))
        noisy = scheduler.add_noise(x0, noise, timesteps)
        for loss_type in ("mse", "vlb"):
            if name == "v_zero_snr" and loss_type == "vlb":
                continue
            losses = training_losses(scheduler, output, x0, noisy, noise, timesteps, loss_type=loss_type)
            pins[f"{name}/training_losses/{loss_type}"] = losses.loss
        if name not in ("v_zero_snr",):
            pins[f"{name}/vb_terms_bpd"] = scheduler.vb_terms_bpd(
                output.double(), x0.double(), noisy.double(), timesteps
            )
        # single steps on the full chain and on a respaced one
        fresh = SimpleDDPMScheduler.from_config(scheduler.config)
        outs = []
        for t in (9, 4, 0):
            out = fresh.step(output[:1], t, noisy[:1], generator=_generator(7))
            outs += [out.prev_sample, out.pred_original_sample]
        fresh.set_timesteps(timesteps=[9, 6, 2, 0])
        for t in (9, 6, 2, 0):
            out = fresh.step(output[:1], t, noisy[:1], generator=_generator(8))
            outs += [out.prev_sample, out.pred_original_sample]
            if name in ("fixed_small", "analytic"):
                out = fresh.step(output[:1], t, noisy[:1], generator=_generator(8), eta=0.3)
                outs += [out.prev_sample]
                outs.append(torch.tensor(fresh.ddim_coefficients(t, 0.3), dtype=torch.float64))
            if not fresh.learns_variance:
                outs.append(fresh.ddim_inverse_step(output[:1], t, noisy[:1]))
        if name not in ("v_zero_snr",):
            bound = fresh.chain_vb_terms_bpd(
                output.double()[:3], x0.double()[:3], noisy.double()[:3], torch.tensor([9, 2, 0])
            )
            outs.append(bound)
        pins[f"{name}/steps"] = torch.cat([o.flatten().double() for o in outs])
        if name.startswith("analytic"):
            pins[f"{name}/step_costs"] = torch.from_numpy(scheduler.step_costs())
            pins[f"{name}/optimal_timesteps"] = torch.tensor(
                [t for k in (1, 2, 4, 7) for t in scheduler.optimal_timesteps(k)]
            )
    big = SimpleDDPMScheduler()
    timesteps = torch.tensor([0, 1, 500, 999])
    x0 = torch.randn(4, 3, 4, 4, generator=_generator(9))
    noise = torch.randn(4, 3, 4, 4, generator=_generator(10))
    pins["T1000/add_noise"] = big.add_noise(x0, noise, timesteps)
    pins["T1000/loss_weights"] = torch.cat([big.loss_weights(timesteps, w) for w in ("simple", "elbo", "min_snr")])
    pins["T1000/prior_bpd"] = big.prior_bpd(x0.double())
    big.set_timesteps(50)
    pins["T1000/timesteps"] = big.timesteps.clone()
    return pins


if __name__ == "__main__":
    PINS_PATH.parent.mkdir(exist_ok=True)
    torch.save(compute_pins(), PINS_PATH)
    print(f"wrote {PINS_PATH}")
