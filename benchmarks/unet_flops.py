"""Parameters and FLOPs of train.py's UNet presets at 32 and 64 pixels: what lets a GPU user estimate speed.

    python benchmarks/unet_flops.py [--resolutions 32 64] [--channels 3]

Counts the floating-point operations of one forward pass of one image with torch's FlopCounterMode (matrix products
and convolutions, 2 FLOPs per multiply-add; element-wise work such as normalisation and activations is not
counted). A training step costs about 3 forward passes per image (the backward pass about twice the forward), a
sampling step one. No clock is involved, so the figures hold on any machine; see docs/performance.md.
"""

import argparse
import sys
from pathlib import Path

import torch
from diffusers import UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the `training` package
from training.unet_presets import UNET_PRESETS  # noqa: E402


def forward_flops(unet: UNet2DModel, channels: int, resolution: int) -> int:
    x = torch.zeros(1, channels, resolution, resolution)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([500]))
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--channels", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}; {args.channels} channels; one image, one forward pass (t = 500)")
    print(f"{'preset':14} {'parameters':>11} " + " ".join(f"{f'GFLOPs {r}x{r}':>14}" for r in args.resolutions))
    for name, preset in UNET_PRESETS.items():
        unets = {r: UNet2DModel(**preset, sample_size=r, in_channels=args.channels, out_channels=args.channels)
                 for r in args.resolutions}  # fmt: skip
        parameters = sum(p.numel() for p in next(iter(unets.values())).parameters())
        flops = [forward_flops(unets[r], args.channels, r) / 1e9 for r in args.resolutions]
        print(f"{name:14} {parameters / 1e6:>10.2f}M " + " ".join(f"{f:>14.2f}" for f in flops))


if __name__ == "__main__":
    main()
