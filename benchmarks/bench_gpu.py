"""GPU training benchmark: Ho et al.'s CIFAR-10 UNet on Fashion-MNIST padded to 32x32, bf16, for a fixed time.

    mkdir -p benchmarks/_work/fashion-mnist-idx                      # once: the IDX files where a copy of the
    cp /usr/share/datasets/fashion-mnist/*.gz benchmarks/_work/fashion-mnist-idx/   # tree carries them (30 MB)
    python benchmarks/bench_gpu.py                 # on a GPU: A/B, then training until --time-budget, then the bound
    python benchmarks/bench_gpu.py --smoke         # on the CPU, in a minute: every code path, tiny sizes

The step is train.py's own (`train.optimizer_step` on what `build_unet`, `build_optimizer`, `build_ema` and
`build_accelerator` build, with `--mixed_precision bf16`), on the `ddpm-cifar10` preset (35.7M parameters).
The 28x28 images are padded with 2 black pixels a side to 32x32 (the UNet halves its input three times).

1. A/B: four copies of the same initial model, eager or `torch.compile`d, with contiguous or channels_last
   weights and inputs, each warmed up (compiled) alone, with its peak memory, then timed in interleaved rounds
   (`interleaved_timer.py`, synchronised); images/s is the median over rounds.
2. The fastest configuration goes on training, from where its A/B steps left it, until --time-budget seconds
   after the start, less a reserve for the evaluation; images/s and peak memory of that run are reported.
3. The EMA weights' bits/dim on --eval-images padded test images: the unbiased K-timestep estimate with the
   standard error of independent groups (`bench_quality.grouped_bound`). Padding adds pixels that are always 0,
   which a model learns to predict almost exactly, so the figure is lower than a 28x28 model's would be.
"""

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(BENCHMARKS.parent))  # the `training` package
from bench_quality import grouped_bound  # noqa: E402
from fashion_mnist import read_idx  # noqa: E402
from interleaved_timer import InterleavedTimer, synchronizer  # noqa: E402

from simple_ddpm.image_processing import pixels_to_model_input  # noqa: E402
from simple_ddpm.timestep_samplers import create_timestep_sampler  # noqa: E402
from training import train  # noqa: E402
from training.arguments import parse_args as parse_train_args  # noqa: E402
from training.image_data import PreparedImages, training_batches  # noqa: E402
from training.unet_presets import build_unet  # noqa: E402

IDX_DIRS = (BENCHMARKS / "_work" / "fashion-mnist-idx", Path("/usr/share/datasets/fashion-mnist"))
PAD = 2  # 28 + 2 * 2 = 32


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny UNet, a few steps: checks the code runs")
    parser.add_argument("--time-budget", type=float, default=540, help="seconds from start to the end of training")
    parser.add_argument("--eval-reserve", type=float, default=60, help="seconds kept for the evaluation")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128, Ho et al.)")
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="AdamW lr (default 2e-4, Ho et al.)")
    parser.add_argument("--ab-rounds", type=int, default=5, help="interleaved A/B rounds (default 5)")
    parser.add_argument("--ab-block-s", type=float, default=2.0, help="seconds per A/B block (default 2)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    parser.add_argument("--eval-images", type=int, default=1000, help="padded test images evaluated")
    parser.add_argument("--eval-group", type=int, default=50, help="images per group of the estimate")
    parser.add_argument("--eval-timesteps", type=int, default=100, help="K of the estimate (default 100)")
    parser.add_argument("--eval-batch-size", type=int, default=5000, help="(image, t) pairs per UNet call")
    parser.add_argument("--idx-dir", type=Path, help="Fashion-MNIST's IDX .gz files (default: the first found of "
                        + ", ".join(map(str, IDX_DIRS)) + ")")  # fmt: skip
    parser.add_argument("--output", type=Path, default=BENCHMARKS / "_work" / "gpu", help="results.json goes here")
    args = parser.parse_args()
    if args.smoke:
        args.time_budget, args.eval_reserve, args.batch_size, args.ab_rounds, args.ab_block_s = 90, 20, 4, 2, 0.0
        args.compile_backend = "eager"  # dynamo's graph capture without inductor's minutes of C++ compilation
        args.eval_images, args.eval_group, args.eval_timesteps, args.eval_batch_size = 8, 4, 2, 64
    return args


def padded_fashion_mnist(idx_dir: Path | None, eval_images: int, limit: int | None) -> PreparedImages:
    """Fashion-MNIST as train.py's PreparedImages, uint8 (N, 1, 32, 32), padded with black."""
    found = [d for d in ([idx_dir] if idx_dir else IDX_DIRS) if (d / "train-images-idx3-ubyte.gz").is_file()]
    if not found:
        sys.exit(f"No Fashion-MNIST IDX files; copy /usr/share/datasets/fashion-mnist/*.gz to {IDX_DIRS[0]}.")

    def load(prefix: str, count: int | None) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(read_idx(found[0] / f"{prefix}-images-idx3-ubyte.gz")[:count]))
        return F.pad(pixels[:, None], (PAD, PAD, PAD, PAD))

    return PreparedImages(
        train=load("train", limit),
        stream=None,
        eval=load("t10k", eval_images),
        channels=1,
        resolution=28 + 2 * PAD,
        dataset_id="fashion_mnist (padded to 32x32)",
    )


def build_trainee(train_args, accelerator, unet: torch.nn.Module, compiled: bool, channels_last: bool, backend: str):
    """train.py's optimizer, schedule and EMA around a copy of `unet`, compiled and/or channels_last."""
    unet = copy.deepcopy(unet).to(accelerator.device)
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    ema = train.build_ema(train_args, unet, accelerator.device)
    optimizer, lr_scheduler = train.build_optimizer(
        train_args, unet, max_steps=10**6, num_processes=1, device=accelerator.device
    )
    if compiled:
        unet = torch.compile(unet, backend=backend)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    unet.train()
    sampler = create_timestep_sampler(train_args.timestep_sampling, train_args.num_train_timesteps)
    return train.Trainee(unet, train.build_scheduler(train_args), optimizer, lr_scheduler, ema, sampler)


class Candidate:
    """One A/B configuration: its model, its batches and its step count."""

    def __init__(self, name, train_args, accelerator, trainee, data, channels_last: bool):
        self.name, self.train_args, self.accelerator, self.trainee = name, train_args, accelerator, trainee
        batches = training_batches(data, train_args, 0, 1, 0)
        if channels_last:
            batches = ((pixels.contiguous(memory_format=torch.channels_last), labels) for pixels, labels in batches)
        self.batches, self.steps, self.peak_memory, self.resident = batches, 0, None, None

    def step(self) -> float:
        self.steps += 1
        loss, _ = train.optimizer_step(self.train_args, self.accelerator, self.trainee, self.batches, self.steps)
        return loss


class MemoryMeter:
    """GPU memory a piece of work adds at its peak over what was allocated when the meter started (None on CPU)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.start()

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)

    def peak_gib(self) -> float | None:
        return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**30 if self.cuda else None

    def resident_gib(self) -> float | None:
        return (torch.cuda.memory_allocated(self.device) - self.base) / 2**30 if self.cuda else None


def main() -> None:
    start = time.perf_counter()
    args = parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("No GPU: bench_gpu.py needs CUDA (or --smoke for a CPU check of the code).")
    torch.backends.cuda.matmul.allow_tf32 = True  # the float32 evaluation; training itself runs in bf16
    torch.backends.cudnn.allow_tf32 = True
    output_dir = tempfile.mkdtemp(prefix="bench_gpu_")
    train_args = parse_train_args(
        [
            f"--model_preset={'tiny' if args.smoke else 'ddpm-cifar10'}",
            "--mixed_precision=bf16",
            f"--train_batch_size={args.batch_size}",
            f"--learning_rate={args.learning_rate}",
            "--lr_scheduler=constant_with_warmup",
            "--lr_warmup_steps=200",
            "--report_to=none",
            f"--output_dir={output_dir}",
            "--seed=0",
        ]
    )
    train.start_processes()
    accelerator = train.build_accelerator(train_args)  # --mixed_precision=bf16, as chosen above
    device, sync = accelerator.device, synchronizer(accelerator.device)
    data = padded_fashion_mnist(args.idx_dir, args.eval_images, 512 if args.smoke else None)
    torch.manual_seed(0)
    unet = build_unet(train_args, data.channels, data.resolution)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{name}, torch {torch.__version__}, bf16 autocast, {train_args.model_preset} UNet "
        f"({sum(p.numel() for p in unet.parameters()) / 1e6:.1f}M parameters), batch {args.batch_size} x 1 x 32 x 32"
    )

    candidates = []
    for compiled in (False, True):
        for channels_last in (False, True):
            label = f"{'compiled' if compiled else 'eager'}, {'channels_last' if channels_last else 'contiguous'}"
            meter = MemoryMeter(device)  # the configuration's own weights, optimizer, EMA and activations
            trainee = build_trainee(train_args, accelerator, unet, compiled, channels_last, args.compile_backend)
            candidate = Candidate(label, train_args, accelerator, trainee, data, channels_last)
            warmup_start = time.perf_counter()
            for _ in range(3):  # compiles forward and backward
                candidate.step()
            sync()
            candidate.peak_memory, candidate.resident = meter.peak_gib(), meter.resident_gib()
            print(f"  warmed up {label} in {time.perf_counter() - warmup_start:.0f} s", flush=True)
            candidates.append(candidate)
    timer = InterleavedTimer(
        {c.name: c.step for c in candidates}, rounds=args.ab_rounds, block_s=args.ab_block_s, warmup=0, sync=sync
    ).run()
    baseline = candidates[0].name
    print(f"\nA/B: medians of {args.ab_rounds} interleaved rounds")
    print(f"{'configuration':28} {'images/s':>9} {'vs eager':>9} {'peak GiB':>9}")
    rows = {}
    for c in candidates:
        images_per_s = args.batch_size / timer.median(c.name)
        speedup = timer.ratio(baseline, c.name)
        memory = f"{c.peak_memory:.2f}" if c.peak_memory is not None else "-"
        rows[c.name] = {"images_per_s": images_per_s, "speedup": speedup, "peak_memory_gib": c.peak_memory}
        print(f"{c.name:28} {images_per_s:9.1f} {speedup:9.3f} {memory:>9}")
    best = max(candidates, key=lambda c: rows[c.name]["images_per_s"])
    print(f"adopted: {best.name}")

    # The run's peak: what the run adds over its start, plus the winner's own resident weights and states.
    meter = MemoryMeter(device)
    run_start, run_steps, loss = time.perf_counter(), best.steps, float("nan")
    deadline = start + args.time_budget - args.eval_reserve
    while time.perf_counter() < deadline or best.steps - run_steps < 2:
        loss = best.step()
    sync()
    run_seconds, run_steps = time.perf_counter() - run_start, best.steps - run_steps
    images_per_s = run_steps * args.batch_size / max(run_seconds, 1e-9)
    memory = meter.peak_gib() + best.resident if meter.cuda else None
    memory_text = f"{memory:.2f} GiB" if memory is not None else "- (CPU)"
    print(
        f"\ntraining ({best.name}): {run_steps} steps in {run_seconds:.0f} s after {best.steps - run_steps} A/B "
        f"steps, {images_per_s:.1f} images/s, peak memory {memory_text}"
    )
    print(f"total {best.steps} steps = {best.steps * args.batch_size:,} images seen; last loss {loss:.4f}")

    pipe = train.sampling_pipeline(accelerator, best.trainee.unet, best.trainee.ema, best.trainee.scheduler)
    bound = grouped_bound(
        pipe, pixels_to_model_input(data.eval), args.eval_group, args.eval_timesteps, args.eval_batch_size
    )
    print(
        f"held-out bits/dim (EMA weights, {bound['images']} padded test images, K = {args.eval_timesteps} "
        f"timesteps per group of {args.eval_group}): {bound['bits_per_dim']:.3f} +- {bound['standard_error']:.3f}"
        f" ({bound['seconds']:.0f} s); wall time {time.perf_counter() - start:.0f} s"
    )
    args.output.mkdir(parents=True, exist_ok=True)
    results = {
        "device": name,
        "ab": rows,
        "adopted": best.name,
        "run": {"steps": run_steps, "seconds": run_seconds, "images_per_s": images_per_s, "peak_memory_gib": memory},
        "images_seen": best.steps * args.batch_size,
        "bound": {k: v for k, v in bound.items() if k != "group_means"},
    }
    (args.output / ("results_smoke.json" if args.smoke else "results.json")).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
