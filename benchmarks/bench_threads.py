"""CPU threads and OpenMP's wait policy: a quickstart training step with 1 thread and with every core.

    python benchmarks/bench_threads.py                 # on an idle machine
    python benchmarks/bench_threads.py --busy 1        # beside one busy process (a pure-Python loop)
    options: [--rounds 3] [--steps 20] [--preset tiny] [--batch-size 128] [--resolution 8]

Thread count and wait policy are fixed when torch starts, so each configuration is a fresh process that times
`--steps` steps (after two warm-up steps) of train.py's UNet preset: forward and backward (bf16 autocast where
train.py would use it), gradient clipping and fused AdamW. The configurations run in rotating order for
`--rounds` rounds; each cell is the median over rounds of a process's median step, and the last column is the
speed-up over one thread with libgomp's default policy in the same round (median over rounds).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, os, statistics, sys, time
import torch
sys.path.insert(0, sys.argv[1])
from types import SimpleNamespace
from training.unet_presets import build_unet
from simple_ddpm.hardware import native_bf16
preset, batch_size, resolution, steps = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0)
options = SimpleNamespace(model_config_name_or_path=None, model_preset=preset, variance_type="fixed_small")
unet = build_unet(options, 1, resolution).train()
optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=True)
x = torch.randn(batch_size, 1, resolution, resolution)
bf16 = native_bf16("cpu")
def step():
    t = torch.randint(0, 1000, (batch_size,))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = unet(x, t).sample
    (out.float() - x).pow(2).mean().backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
for _ in range(2):
    step()
times = []
for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(json.dumps({"median_s": statistics.median(times), "threads": torch.get_num_threads(), "bf16": bf16}))
"""

CONFIGS = {  # name: environment for the worker
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "every core, default wait": {},
    "every core, PASSIVE wait": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=8)
    parser.add_argument("--busy", type=int, default=0, help="busy processes running beside (default 0: idle)")
    return parser.parse_args()


def run_worker(args: argparse.Namespace, env: dict[str, str]) -> dict:
    clean = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    training = str(Path(__file__).resolve().parents[1])  # holds the `training` package
    command = [sys.executable, "-c", WORKER, training, args.preset, str(args.batch_size), str(args.resolution)]
    result = subprocess.run([*command, str(args.steps)], env={**clean, **env}, capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        seconds: dict[str, list[float]] = {name: [] for name in CONFIGS}
        speedups: dict[str, list[float]] = {name: [] for name in CONFIGS}
        threads = {}
        names = list(CONFIGS)
        for round_index in range(args.rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            this_round = {}
            for name in order:
                result = run_worker(args, CONFIGS[name])
                this_round[name], threads[name] = result["median_s"], result["threads"]
            for name in names:
                seconds[name].append(this_round[name])
                speedups[name].append(this_round["1 thread"] / this_round[name])
    finally:
        for process in busy:
            process.kill()
    print(
        f"{args.preset} UNet, batch {args.batch_size} x 1 x {args.resolution} x {args.resolution}, {os.cpu_count()} "
        f"CPUs, {args.busy} busy process(es) beside; medians of {args.rounds} rounds of {args.steps} steps\n"
    )
    print(f"{'configuration':28} {'threads':>7} {'ms/step':>8} {'speed-up over 1 thread':>23}")
    for name in names:
        print(
            f"{name:28} {threads[name]:>7} {statistics.median(seconds[name]) * 1e3:>8.1f} "
            f"{statistics.median(speedups[name]):>23.2f}"
        )


if __name__ == "__main__":
    main()
