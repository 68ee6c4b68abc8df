"""Training throughput: train.py's optimizer step, with its defaults, against the stock diffusers loop body.

    python benchmarks/fashion_mnist.py     # once: Fashion-MNIST to benchmarks/_work/fashion_mnist
    python benchmarks/bench_training.py --unet mid    # 1.6M-parameter 32-64-64 UNet, 64 x 1 x 28 x 28
    python benchmarks/bench_training.py --unet tiny   # the quickstart: `tiny` preset, 128 x 1 x 8 x 8 digits
    options: [--rounds 7] [--threads N] [--quality-steps 300] [--extra TRAIN.PY OPTIONS...] [--profile]

Ours is `train.optimizer_step` itself, on what train.py builds with its defaults (`build_accelerator`, which
picks the precision: bf16 autocast where the CPU or GPU computes it natively; `build_unet`, `speed_up`,
`build_optimizer` with fused AdamW, `build_ema`, `build_scheduler`, the in-memory batches of
`training_batches`), with the threads train.py would use (every core; `--threads` overrides both sides). The
reference is the loop body of diffusers' examples/unconditional_image_generation/train_unconditional.py at its
defaults (float32): `DDPMScheduler.add_noise`, `F.mse_loss` on the noise, `accelerator.backward`, gradient
clipping, AdamW, the lr schedule, diffusers' `EMAModel.step` and `loss.item()`, on a copy of the same UNet, with
the same batches. Steps alternate in interleaved rounds (`interleaved_timer.py`); the ratio is the median within a
round of the reference's time over ours, i.e. our images/s over the reference's (target >= 1.3, issue 10).

Speed must not cost quality: with `--quality-steps N` both train N steps from the same initial weights on the same
batches, then the EMA weights' held-out bits/dim is estimated on the same held-out images with the same noise
(`pipe.elbo(num_timesteps=100)`, stratified), and the paired difference is printed with its standard error.

Then each step is split into phases with timers around the calls that make it (the CPU runs synchronously, so a
call's wall time is its work): data (the next batch, to x_0), UNet forward, backward, optimizer (clipping, AdamW,
lr schedule, zero_grad), EMA, and the rest (noise, add_noise, the target and weights, the loss, checks).
Target (issue 5): forward + backward >= 90% of a step. `--profile` prints torch.profiler's top ops of our step.
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(BENCHMARKS.parent))  # the `training` package
from interleaved_timer import InterleavedTimer  # noqa: E402

from simple_ddpm.cpu_threads import configure_cpu_threads  # noqa: E402
from simple_ddpm.float32_attention import use_float32_attention  # noqa: E402
from simple_ddpm.image_processing import pixels_to_model_input  # noqa: E402
from simple_ddpm.timestep_samplers import create_timestep_sampler  # noqa: E402
from training import train  # noqa: E402
from training.arguments import parse_args as parse_train_args  # noqa: E402
from training.image_data import prepare_images, training_batches  # noqa: E402
from training.unet_presets import build_unet  # noqa: E402

DATASET = BENCHMARKS / "_work" / "fashion_mnist"
TARGET_RATIO, TARGET_UNET_SHARE = 1.3, 0.90
# The three-level network: 32-64-64 channels, self-attention at the lowest level (7 x 7 for 28 x 28).
MID_UNET = {
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 8,
    "attention_head_dim": None,
}
# The same network as diffusers builds it by default: attention_head_dim=8, i.e. 8 heads of 8 at 64 channels.
DEFAULT_HEADS_UNET = {**MID_UNET, "attention_head_dim": 8}
PHASES = ("data", "forward", "backward", "optimizer", "ema", "rest")
# --process: steps of the short and the long run of each lane; the per-step time is their difference's.
PROCESS_STEPS = {"tiny": (10, 60), "small": (3, 13), "mid": (5, 25), "default": (5, 25)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--unet",
        choices=("mid", "default", "tiny", "small"),
        default="mid",
        help="mid: the 1.6M-parameter 32-64-64 UNet on Fashion-MNIST, batch 64, one attention head; default: the "
        "same built with diffusers' default attention_head_dim (8 heads of 8); tiny: the quickstart's preset and "
        "data (8x8 digits), batch 128; small: the `small` preset on Fashion-MNIST, batch 64",
    )
    parser.add_argument(
        "--process",
        action="store_true",
        help="time training/train.py as a process (and the stock loop as one) instead: see the module docstring",
    )
    parser.add_argument(
        "--process-steps", type=int, nargs=2, metavar=("SHORT", "LONG"), help="steps of the short and long runs"
    )
    parser.add_argument("--stock-steps", type=int, help=argparse.SUPPRESS)  # one stock-loop process of N steps
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--phase-steps", type=int, default=10, help="steps timed phase by phase (default 10)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads; default: what train.py picks")
    parser.add_argument("--quality-steps", type=int, default=300, help="steps of the quality check (0: skip)")
    parser.add_argument("--dataset", type=Path, default=DATASET, help=f"a save_to_disk folder (default {DATASET})")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py options, last")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of our step")
    return parser.parse_args()


class StepSetup:
    """What one step needs: train.py's own objects, or the reference's stock diffusers ones."""

    def __init__(self, args, accelerator, unet: torch.nn.Module, batches: Iterator[torch.Tensor], stock: bool):
        self.args, self.accelerator, self.batches, self.stock = args, accelerator, batches, stock
        self.step_count = 0
        if not stock:
            unet = train.speed_up(args, use_float32_attention(unet), accelerator.device)
            ema = train.build_ema(args, unet, accelerator.device)
            optimizer, lr_scheduler = train.build_optimizer(
                args, unet, max_steps=10**6, num_processes=1, device=accelerator.device
            )
            unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
            sampler = create_timestep_sampler(args.timestep_sampling, args.num_train_timesteps)
            self.trainee = train.Trainee(unet, train.build_scheduler(args), optimizer, lr_scheduler, ema, sampler)
            return
        # The stock example at its defaults: float32 (the UNet is not prepared, so no autocast wraps it), torch's
        # default AdamW, diffusers' EMAModel without foreach.
        optimizer = torch.optim.AdamW(
            unet.parameters(),
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.adam_weight_decay,
            eps=args.adam_epsilon,
        )
        ema = EMAModel(
            unet.parameters(),
            decay=args.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=args.ema_inv_gamma,
            power=args.ema_power,
            model_cls=type(unet),
            model_config=unet.config,
        )
        lr_scheduler = get_scheduler(
            args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=10**6
        )
        sampler = create_timestep_sampler("uniform", args.num_train_timesteps)
        self.trainee = train.Trainee(
            unet.to(accelerator.device), train.build_scheduler(args), optimizer, lr_scheduler, ema, sampler
        )
        self.ddpm = DDPMScheduler.from_config(self.trainee.scheduler.config)

    def step(self) -> float:
        self.step_count += 1
        if not self.stock:
            loss, _ = train.optimizer_step(self.args, self.accelerator, self.trainee, self.batches, self.step_count)
            return loss
        return self.stock_step()

    def stock_step(self) -> float:
        """The loop body of diffusers' train_unconditional.py (epsilon prediction)."""
        model, accelerator = self.trainee, self.accelerator
        clean_images = pixels_to_model_input(next(self.batches)[0].to(accelerator.device))
        noise = torch.randn(clean_images.shape, dtype=clean_images.dtype, device=clean_images.device)
        timesteps = torch.randint(
            0, self.ddpm.config.num_train_timesteps, (clean_images.shape[0],), device=clean_images.device
        ).long()
        noisy_images = self.ddpm.add_noise(clean_images, noise, timesteps)
        with accelerator.accumulate(model.unet):
            model_output = model.unet(noisy_images, timesteps).sample
            loss = F.mse_loss(model_output.float(), noise.float())
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.unet.parameters(), 1.0)
            model.optimizer.step()
            model.lr_scheduler.step()
            model.optimizer.zero_grad()
        if accelerator.sync_gradients:
            model.ema.step(model.unet.parameters())
        return loss.detach().item()


class PhaseClock:
    """Seconds per phase, from timers wrapped around the calls of a step (see the module docstring)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, phase: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        return timed

    def wrap_iterator(self, phase: str, iterator: Iterator) -> Iterator:
        while True:
            start = time.perf_counter()
            item = next(iterator)
            self.seconds[phase] += time.perf_counter() - start
            yield item

    def measure(self, setup: StepSetup, steps: int) -> dict[str, float]:
        """Per-step seconds of each phase over `steps` steps of `setup`; 'rest' is what no timer covered."""
        model, accelerator = setup.trainee, setup.accelerator
        saved = (setup.batches, model.unet.forward, accelerator.backward, accelerator.clip_grad_norm_)
        saved += (model.optimizer.step, model.lr_scheduler.step, model.optimizer.zero_grad, model.ema.step)
        setup.batches = self.wrap_iterator("data", setup.batches)
        model.unet.forward = self.wrap("forward", model.unet.forward)
        accelerator.backward = self.wrap("backward", accelerator.backward)
        accelerator.clip_grad_norm_ = self.wrap("optimizer", accelerator.clip_grad_norm_)
        model.optimizer.step = self.wrap("optimizer", model.optimizer.step)
        model.lr_scheduler.step = self.wrap("optimizer", model.lr_scheduler.step)
        model.optimizer.zero_grad = self.wrap("optimizer", model.optimizer.zero_grad)
        model.ema.step = self.wrap("ema", model.ema.step)
        total = 0.0
        try:
            for _ in range(steps):
                start = time.perf_counter()
                setup.step()
                total += time.perf_counter() - start
        finally:
            setup.batches, model.unet.forward, accelerator.backward, accelerator.clip_grad_norm_ = saved[:4]
            model.optimizer.step, model.lr_scheduler.step, model.optimizer.zero_grad, model.ema.step = saved[4:]
            for name in ("forward",):
                vars(model.unet).pop(name, None)
            for name in ("backward", "clip_grad_norm_"):
                vars(accelerator).pop(name, None)
        per_step = {phase: self.seconds[phase] / steps for phase in PHASES if phase != "rest"}
        per_step["total"] = total / steps
        per_step["rest"] = per_step["total"] - sum(per_step[phase] for phase in PHASES if phase != "rest")
        return per_step


def train_options(args, output_dir: str) -> list[str]:
    """train.py's options for the benchmarked setup; train.py's defaults for everything that makes a step fast."""
    # --recipe ddpm: the stock loop's objective (epsilon, L_simple, linear betas), as train.py's default was when
    # the tables of RESULTS.md were measured; the default recipe's step differs only in its target.
    common = ["--recipe=ddpm", "--report_to=none", f"--output_dir={output_dir}"]
    if args.unet == "tiny":  # the quickstart's data and batch (digits: no --eval_split, 10% held out)
        return [*common, "--num_eval_images=180", *args.extra]
    if args.unet == "small":
        model = ["--model_preset=small"]
    else:
        config = Path(output_dir) / f"{args.unet}_unet.json"
        config.write_text(json.dumps(MID_UNET if args.unet == "mid" else DEFAULT_HEADS_UNET))
        model = [f"--model_config_name_or_path={config}"]
    return [
        *common,
        f"--dataset_name={args.dataset}",
        "--eval_split=test",
        "--num_eval_images=256",
        "--max_train_samples=8192",
        *model,
        "--train_batch_size=64",
        *args.extra,
    ]


def held_out_bits_per_dim(setup: StepSetup, data, seed: int = 0) -> torch.Tensor:
    """Per-image estimate of the EMA weights' negative ELBO on the held-out images (same noise for every setup)."""
    pipe = train.sampling_pipeline(setup.accelerator, setup.trainee.unet, setup.trainee.ema, setup.trainee.scheduler)
    return pipe.elbo(
        pixels_to_model_input(data.eval),
        generator=torch.Generator().manual_seed(seed),
        batch_size=256,
        num_timesteps=100,
    ).bits_per_dim


def stock_process(train_args, data, steps: int) -> None:
    """The stock loop as a program: `steps` steps of diffusers' loop body in float32 on this UNet and data."""
    torch.manual_seed(0)
    unet = build_unet(train_args, data.channels, data.resolution)
    accelerator = train.build_accelerator(train_args)  # no UNet to measure: float32, which the stock loop uses
    setup = StepSetup(train_args, accelerator, unet, training_batches(data, train_args, 0, 1, 0), stock=True)
    setup.trainee.unet.train()
    for _ in range(steps):
        setup.step()


def process_seconds(command: list[str], output_dir: Path) -> float:
    """Wall seconds of one run of `command`, in its own output folder and precision cache (each run measures the
    precision afresh, so the measurement cancels between a short and a long run)."""
    environment = {**os.environ, "SIMPLE_DDPM_CACHE": str(output_dir / "cache")}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    for line in result.stderr.splitlines():
        if "precision (" in line:
            print(f"  {line.split(': ', 1)[-1]}")
    return seconds


def time_processes(args, data) -> None:
    """Per-step seconds of train.py (its defaults, and with --mixed_precision no) and of the stock loop, each run
    as a program twice, short and long; lanes interleaved, the per-step time the difference over the steps."""
    short, long = args.process_steps or PROCESS_STEPS[args.unet]
    work = Path(tempfile.mkdtemp(prefix="bench_training_process_"))
    cheap_end = ["--num_samples=1", "--num_inference_steps=2", "--final_eval_timesteps=2", "--num_eval_images=16"]
    cheap_end += ["--checkpointing_steps=0", "--sample_every=0", "--eval_every=0"]

    def lane(name: str, steps: int, folder: Path) -> list[str]:
        options = train_options(args, str(folder))
        if name == "stock loop":
            return [sys.executable, __file__, "--unet", args.unet, "--dataset", str(args.dataset), "--stock-steps",
                    str(steps), *(["--extra", *args.extra] if args.extra else [])]  # fmt: skip
        precision = ["--mixed_precision=no"] if name == "train.py no" else []
        return [sys.executable, str(BENCHMARKS.parent / "training" / "train.py"), *options, *cheap_end,
                f"--max_train_steps={steps}", *precision]  # fmt: skip

    lanes = ("train.py", "train.py no", "stock loop")
    seconds: dict[str, list[float]] = {name: [] for name in lanes}
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{args.unet} UNet, {data.channels} x {data.resolution} x {data.resolution} images: runs of {short} and "
          f"{long} steps, {args.rounds} round(s); load {load}")  # fmt: skip
    for run in range(args.rounds):
        for name in lanes[run % 3 :] + lanes[: run % 3]:
            times = {}
            for steps in (short, long):
                folder = work / f"{name.replace(' ', '_')}_{steps}_{run}"
                folder.mkdir(parents=True, exist_ok=True)
                times[steps] = process_seconds(lane(name, steps, folder), folder)
            per_step = (times[long] - times[short]) / (long - short)
            seconds[name].append(per_step)
            print(f"  round {run + 1} {name:12} {times[short]:6.1f} s / {times[long]:6.1f} s: {per_step:.3f} s/step")
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name in lanes:
        print(f"{name:12} {median[name]:.3f} s/step")
    print(
        f"train.py / stock loop throughput: {median['stock loop'] / median['train.py']:.2f}x; train.py against its "
        f"--mixed_precision no: {median['train.py no'] / median['train.py']:.2f}x; load "
        f"{Path('/proc/loadavg').read_text().split()[:3]}"
    )


def main() -> None:
    args = parse_args()
    if args.unet == "mid" and not args.dataset.is_dir():
        sys.exit(f"No dataset at {args.dataset}: run `python benchmarks/fashion_mnist.py` first.")
    threads = configure_cpu_threads() if args.threads is None else None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    output_dir = tempfile.mkdtemp(prefix="bench_training_")
    train_args = parse_train_args(train_options(args, output_dir))
    train.start_processes(threads)
    data = prepare_images(train_args)
    if args.stock_steps is not None:
        return stock_process(train_args, data, args.stock_steps)
    if args.process:
        return time_processes(args, data)
    torch.manual_seed(0)
    unet = build_unet(train_args, data.channels, data.resolution)
    batch_shape = (train_args.train_batch_size, data.channels, data.resolution, data.resolution)
    accelerator = train.build_accelerator(train_args, use_float32_attention(copy.deepcopy(unet)), batch_shape)
    setups = {
        name: StepSetup(
            train_args,
            accelerator,
            copy.deepcopy(unet),
            training_batches(data, train_args, 0, 1, 0),
            stock=name == "diffusers parts",
        )
        for name in ("train.py", "diffusers parts")
    }
    for setup in setups.values():
        setup.trainee.unet.train()
    batch_size = train_args.train_batch_size

    print(
        f"device cpu, torch {torch.__version__}, threads {torch.get_num_threads()}, {args.unet} UNet "
        f"({sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters), batch {batch_size} x "
        f"{data.channels} x {data.resolution} x {data.resolution}, {train_args.prediction_type}, "
        f"{train_args.loss_weighting} weighting, EMA {'on' if train_args.use_ema else 'off'}; train.py: "
        f"{accelerator.mixed_precision} precision, fused AdamW {train_args.fused_adamw}, channels_last "
        f"{train_args.channels_last}, compile {train_args.torch_compile}; diffusers parts: float32"
    )
    timer = InterleavedTimer(
        {name: setup.step for name, setup in setups.items()}, rounds=args.rounds, block_s=0.0, warmup=2
    ).run()
    print(f"medians of {args.rounds} interleaved rounds, one step per block\n")
    print(f"{'step':18} {'s/step':>8} {'images/s':>9}")
    for name in setups:
        seconds = timer.median(name)
        print(f"{name:18} {seconds:8.3f} {batch_size / seconds:9.1f}")
    ratio = timer.ratio("diffusers parts", "train.py")
    verdict = "ok" if ratio >= TARGET_RATIO else "MISS"
    print(f"\nthroughput ratio train.py / diffusers parts: {ratio:.3f} {verdict} (target >= {TARGET_RATIO})\n")

    print(f"where a step goes, mean over {args.phase_steps} steps (ms per step, share of the step)")
    print(f"{'phase':12}" + "".join(f" {name:>22}" for name in setups))
    breakdowns = {name: PhaseClock().measure(setup, args.phase_steps) for name, setup in setups.items()}
    for phase in (*PHASES, "total"):
        cells = []
        for name in setups:
            ms, share = breakdowns[name][phase] * 1e3, breakdowns[name][phase] / breakdowns[name]["total"]
            cells.append(f"{ms:13.1f} {share:7.1%}")
        print(f"{phase:12}" + "".join(f" {cell:>22}" for cell in cells))
    for name in setups:
        share = (breakdowns[name]["forward"] + breakdowns[name]["backward"]) / breakdowns[name]["total"]
        verdict = "ok" if share >= TARGET_UNET_SHARE else "MISS"
        print(f"{name}: UNet forward + backward {share:.1%} of a step {verdict} (target >= {TARGET_UNET_SHARE:.0%})")

    if args.quality_steps:
        print(
            f"\nquality at equal images seen: {args.quality_steps} steps x {batch_size} images from the same weights"
        )
        bits = {}
        for name in setups:
            torch.manual_seed(1)  # the same noise and timesteps for both
            setup = StepSetup(
                train_args,
                accelerator,
                copy.deepcopy(unet),
                training_batches(data, train_args, 0, 1, 0),
                name != "train.py",
            )
            setup.trainee.unet.train()
            start = time.perf_counter()
            for _ in range(args.quality_steps):
                setup.step()
            seconds = time.perf_counter() - start
            bits[name] = held_out_bits_per_dim(setup, data)
            error = bits[name].std() / len(bits[name]) ** 0.5
            print(
                f"{name:18} held-out bits/dim {bits[name].mean():.3f} +- {error:.3f} ({len(bits[name])} images, "
                f"stratified 100-term estimate; {seconds:.0f} s of training)"
            )
        difference = bits["train.py"] - bits["diffusers parts"]
        print(
            f"paired difference train.py - diffusers parts: {difference.mean():+.3f} +- "
            f"{difference.std() / len(difference) ** 0.5:.3f} bits/dim"
        )

    if args.profile:
        setup = setups["train.py"]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(3):
                setup.step()
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
