"""bf16 attention with small heads on the CPU: diffusers' attention block under bf16 autocast, before and after
`simple_ddpm.float32_attention` (the block run in float32 inside autocast), against float32.

    python benchmarks/bench_attention.py [--threads N] [--batch 64] [--channels 64] [--rounds 7] [--profile]

One attention block as UNet2DModel's AttnDownBlock2D builds it (group norm, q/k/v, scaled dot-product attention,
output projection, residual), `--channels` channels split into 1, 4 or 8 heads, on 7x7, 14x14 and 16x16 tokens:
forward and backward of a batch, the three variants timed in interleaved rounds (`interleaved_timer.py`), medians.
`--profile` prints torch.profiler's top ops of the bf16 block before the fix, 8 heads on 7x7 tokens, to show
which kernels (forward or backward) take the time.
"""

import argparse
import sys
from pathlib import Path

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleaved_timer import InterleavedTimer  # noqa: E402

from simple_ddpm.float32_attention import Float32AttnProcessor  # noqa: E402
from simple_ddpm.hardware import native_bf16  # noqa: E402

HEADS = (1, 4, 8)
SIDES = (7, 14, 16)


def attention_block(channels: int, heads: int) -> Attention:
    """The attention of diffusers' AttnDownBlock2D (`attention_head_dim=channels // heads`)."""
    return Attention(
        channels,
        heads=heads,
        dim_head=channels // heads,
        rescale_output_factor=1.0,
        eps=1e-5,
        norm_num_groups=8,
        residual_connection=True,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    )


def forward_backward(block: Attention, x: torch.Tensor, bf16: bool, processor) -> None:
    block.set_processor(processor)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        output = block(x)
    output.float().sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {native_bf16('cpu')}; batch {args.batch}, "
        f"{args.channels} channels; forward + backward, medians of {args.rounds} interleaved rounds (ms)"
    )
    print(f"{'tokens':>7} {'heads':>5} {'head dim':>8} {'float32':>8} {'bf16 before':>11} {'bf16 after':>10} "
          f"{'after/before':>12} {'after/f32':>9}")  # fmt: skip
    for side in SIDES:
        for heads in HEADS:
            torch.manual_seed(0)
            block = attention_block(args.channels, heads)
            x = torch.randn(args.batch, args.channels, side, side, requires_grad=True)
            calls = {
                "float32": lambda block=block, x=x: forward_backward(block, x, False, AttnProcessor2_0()),
                "before": lambda block=block, x=x: forward_backward(block, x, True, AttnProcessor2_0()),
                "after": lambda block=block, x=x: forward_backward(block, x, True, Float32AttnProcessor()),
            }
            timer = InterleavedTimer(calls, rounds=args.rounds, block_s=0.2, warmup=1).run()
            ms = {name: timer.median(name) * 1e3 for name in calls}
            print(
                f"{side:>3}x{side:<3} {heads:>5} {args.channels // heads:>8} {ms['float32']:8.1f} "
                f"{ms['before']:11.1f} {ms['after']:10.1f} {timer.ratio('after', 'before'):12.2f} "
                f"{timer.ratio('after', 'float32'):9.2f}",
                flush=True,
            )
    if args.profile:
        block = attention_block(args.channels, 8)
        x = torch.randn(args.batch, args.channels, 7, 7, requires_grad=True)
        forward_backward(block, x, True, AttnProcessor2_0())
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(5):
                forward_backward(block, x, True, AttnProcessor2_0())
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
