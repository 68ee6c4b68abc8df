"""Time of one `SimpleDDPMScheduler.step` and `add_noise` against diffusers' `DDPMScheduler` and a bare floor.

    python benchmarks/bench_scheduler.py [--device cpu|cuda] [--threads 1] [--rounds 21]

All three implementations run on the same tensors (batch 64 x 3 x 32 x 32 float32), with the same config and
timestep and generators seeded alike; their outputs are checked to agree before anything is timed. The floor is
the update written by hand with Python-float coefficients precomputed and in-place ops where they are legal:
the least element-wise work a DDPM step can do. Times are medians over interleaved rounds (see
`interleaved_timer.py`); the ratios are medians of ratios measured in the same round. Targets (issue 5):
ours <= 0.5x diffusers and <= 1.5x the floor.

Page faults. The last two columns are the minor page faults per call during the timed blocks. On this
machine's VM, touching a batch-sized temporary sometimes faults its ~190 pages in again (we suspect the DAMON
page reclaimer that runs here), at a few microseconds a page; it hits the implementation with the most
temporaries and varies from run to run, so the diffusers column moves more than the others. The rows at t = 0
(the last step, which draws no noise) compare the arithmetic alone; at t > 0 the noise draw (the randn
column) is most of every implementation's time.
"""

import argparse
import math
import os
import sys
from collections.abc import Callable

import torch
from diffusers import DDPMScheduler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interleaved_timer import InterleavedTimer, synchronizer  # noqa: E402

from simple_ddpm import SimpleDDPMScheduler  # noqa: E402

SHAPE = (64, 3, 32, 32)
TARGET_VS_DIFFUSERS = 0.5
TARGET_VS_FLOOR = 1.5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1, see RESULTS.md)")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds per case (default 21)")
    parser.add_argument("--block-s", type=float, default=0.05, help="seconds per timed block (default 0.05)")
    parser.add_argument("--timestep", type=int, default=500, help="t of the noisy steps (default 500 of 1000)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda given but torch.cuda.is_available() is False")
    return args


def floor_step(
    scheduler: DDPMScheduler, t: int, prev_t: int
) -> Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """The bare DDPM step at t (Ho et al. eq. 15 and 7), coefficients as Python floats computed here, in float64."""
    config = scheduler.config
    alpha_bar = scheduler.alphas_cumprod.double()
    a_t = alpha_bar[t].item()
    a_prev = alpha_bar[prev_t].item() if prev_t >= 0 else 1.0
    beta = 1 - a_t / a_prev
    c0 = math.sqrt(a_prev) * beta / (1 - a_t)
    ct = math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)
    std = math.sqrt(beta * (1 - a_prev) / (1 - a_t))
    if config.prediction_type == "epsilon":
        c_x, c_out = 1 / math.sqrt(a_t), math.sqrt(1 / a_t - 1)
    else:  # v_prediction
        c_x, c_out = math.sqrt(a_t), math.sqrt(1 - a_t)
    r = config.clip_sample_range

    def step(model_output: torch.Tensor, sample: torch.Tensor, generator: torch.Generator):
        if config.prediction_type == "sample":
            x0 = model_output.clamp(-r, r) if config.clip_sample else model_output
        else:
            x0 = torch.mul(sample, c_x).sub_(model_output, alpha=c_out)
            if config.clip_sample:
                x0.clamp_(-r, r)
        prev = torch.mul(sample, ct).add_(x0, alpha=c0)
        if std > 0:
            prev.add_(torch.randn(sample.shape, generator=generator, device=sample.device), alpha=std)
        return prev, x0

    return step


def time_step_case(
    prediction_type: str, clip_sample: bool, t: int, args: argparse.Namespace, tensors: dict
) -> InterleavedTimer:
    ours = SimpleDDPMScheduler(prediction_type=prediction_type, clip_sample=clip_sample)
    ours.set_timesteps(len(ours))
    theirs = DDPMScheduler.from_config(ours.config)
    theirs.set_timesteps(len(theirs))
    floor = floor_step(theirs, t, t - 1)
    x, model_output, device = tensors["sample"], tensors["model_output"], tensors["device"]

    def generator() -> torch.Generator:
        return torch.Generator(device).manual_seed(0)

    results = {
        "ours": ours.step(model_output, t, x, generator=generator(), return_dict=False),
        "diffusers": theirs.step(model_output, t, x, generator=generator(), return_dict=False),
        "floor": floor(model_output, x, generator()),
    }
    for name in ("diffusers", "floor"):
        for ours_tensor, other in zip(results["ours"], results[name], strict=True):
            torch.testing.assert_close(ours_tensor, other, rtol=0, atol=1e-5, msg=f"ours and {name} disagree")

    g_ours, g_theirs, g_floor, g_randn = generator(), generator(), generator(), generator()
    functions = {
        "ours": lambda: ours.step(model_output, t, x, generator=g_ours),
        "diffusers": lambda: theirs.step(model_output, t, x, generator=g_theirs),
        "floor": lambda: floor(model_output, x, g_floor),
    }
    if t > 0:
        functions["randn"] = lambda: torch.randn(x.shape, generator=g_randn, device=device)
    return InterleavedTimer(functions, args.rounds, args.block_s, sync=synchronizer(device)).run()


def time_add_noise(args: argparse.Namespace, tensors: dict) -> InterleavedTimer:
    ours = SimpleDDPMScheduler()
    theirs = DDPMScheduler.from_config(ours.config)
    x0, noise, device = tensors["sample"], tensors["model_output"], tensors["device"]
    timesteps = torch.randint(0, len(ours), (SHAPE[0],), generator=torch.Generator().manual_seed(1)).to(device)
    alpha_bar = theirs.alphas_cumprod.double()[timesteps.cpu()].view(-1, 1, 1, 1)
    a, b = alpha_bar.sqrt().float().to(device), (1 - alpha_bar).sqrt().float().to(device)

    def floor() -> torch.Tensor:
        return torch.mul(x0, a).addcmul_(b, noise)

    expected = floor()
    for name, result in (
        ("ours", ours.add_noise(x0, noise, timesteps)),
        ("diffusers", theirs.add_noise(x0, noise, timesteps)),
    ):
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-5, msg=f"{name} and floor disagree")
    functions = {
        "ours": lambda: ours.add_noise(x0, noise, timesteps),
        "diffusers": lambda: theirs.add_noise(x0, noise, timesteps),
        "floor": floor,
    }
    return InterleavedTimer(functions, args.rounds, args.block_s, sync=synchronizer(device)).run()


COLUMNS = (
    f"{'case':<34} {'ours':>7} {'diffusers':>9} {'floor':>7} {'randn':>7} "
    f"{'ours/diffusers':>14} {'ours/floor':>10} {'faults: ours':>12} {'diffusers':>9}"
)


def print_row(label: str, timer: InterleavedTimer) -> None:
    """One line of the table: medians in microseconds, then the ratios with their verdicts."""

    def verdict(ratio: float, target: float) -> str:
        return f"{ratio:.3f} {'ok' if ratio <= target else 'MISS':<4}"

    cells = [f"{timer.median(name) * 1e6:{width}.1f}" for name, width in (("ours", 7), ("diffusers", 9), ("floor", 7))]
    cells.append(f"{timer.median('randn') * 1e6:7.1f}" if "randn" in timer.seconds else f"{'-':>7}")
    cells.append(f"{verdict(timer.ratio('ours', 'diffusers'), TARGET_VS_DIFFUSERS):>14}")
    cells.append(f"{verdict(timer.ratio('ours', 'floor'), TARGET_VS_FLOOR):>10}")
    cells += [f"{timer.median_page_faults(name):{width}.0f}" for name, width in (("ours", 12), ("diffusers", 9))]
    print(f"{label:<34} " + " ".join(cells))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "device": device,
        "sample": torch.randn(SHAPE, generator=generator).to(device),
        "model_output": torch.randn(SHAPE, generator=generator).to(device),
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {SHAPE}, float32")
    print(f"medians of {args.rounds} interleaved rounds; times in microseconds per call\n")

    print(COLUMNS)
    print("-" * len(COLUMNS))
    # t = 0 is the last step, which draws no noise: its rows compare the arithmetic alone.
    cases = [
        (p, c, t) for t in (args.timestep, 0) for p in ("epsilon", "sample", "v_prediction") for c in (True, False)
    ]
    for prediction_type, clip_sample, t in cases:
        label = f"step {prediction_type}, clip {'on' if clip_sample else 'off'}, t={t}"
        print_row(label, time_step_case(prediction_type, clip_sample, t, args, tensors))
    print_row("add_noise, 64 random timesteps", time_add_noise(args, tensors))
    print(f"\ntargets: ours/diffusers <= {TARGET_VS_DIFFUSERS}, ours/floor <= {TARGET_VS_FLOOR}")
    print("randn: torch.randn of the batch alone, the noise draw that every step at t > 0 makes")


if __name__ == "__main__":
    main()
