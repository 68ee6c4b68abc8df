"""The end of a training run, stage by stage: what each final stage does and costs, said before it starts.

After the last optimizer step train.py estimates the analytic variance table, draws the final sample grid,
computes the held-out bound and, with --fid_every, the Frechet distance. Each of them is announced by one log line
with its cost in UNet calls (what a user compares with the run's training work to tell work from a hang), shows
the pipeline's progress bar when stderr is a terminal, and logs its time when done; a log file gets those two lines
per stage and no bar.
"""

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from simple_ddpm import SimpleDDPMPipeline

logger = logging.getLogger("train")


# A final stage that is not exact (the bound's estimate, a grid of fewer than T steps) keeps its usual size (100 terms,
# --periodic_inference_steps) unless that would cost more than this share of the training's UNet work (the share
# that the exact bound may take); then it takes as many as fit, never fewer than MIN_FINAL_STEPS. With the analytic
# table's tenth, the end of a run costs at most about 60% of its training, so a smoke run ends in seconds.
SHORTENED_MAX_SHARE = 0.25
MIN_FINAL_STEPS = 10


def training_unet_calls(images_seen: int) -> int:
    """The training's UNet work in forward-pass units: about 3 per image seen (forward, and backward at twice it)."""
    return 3 * images_seen


def affordable_steps(usual: int, calls_per_step: int, images_seen: int) -> int:
    """`usual`, or fewer (down to MIN_FINAL_STEPS) where `usual` x `calls_per_step` UNet calls would exceed
    SHORTENED_MAX_SHARE of the training's work."""
    fit = int(SHORTENED_MAX_SHARE * training_unet_calls(images_seen) // max(calls_per_step, 1))
    return min(usual, max(MIN_FINAL_STEPS, fit))


def final_grid_steps(args, images_seen: int, exact_max_share: float) -> int:
    """Reverse steps of the final grid: --num_inference_steps, else all T when the grid's --num_samples x T UNet
    calls cost at most `exact_max_share` of the training's UNet work (the rule of the exact final bound), else
    --periodic_inference_steps, the grids' steps during training, shortened as `affordable_steps` says. A count,
    not a clock, so reruns agree."""
    if args.num_inference_steps is not None:
        return args.num_inference_steps
    T = args.num_train_timesteps
    if args.num_samples * T <= exact_max_share * training_unet_calls(images_seen):
        return T
    return min(T, affordable_steps(args.periodic_inference_steps, args.num_samples, images_seen))


@contextmanager
def final_stage(pipe: SimpleDDPMPipeline | None, what: str, unet_calls: int) -> Iterator[None]:
    """Log `what` and its cost before the stage, and its time after; meanwhile the pipeline's progress bar shows on
    a terminal. The bar is switched off again afterwards."""
    logger.info("Final stage: %s (%s UNet calls)", what, f"{unet_calls:,}")
    start = time.perf_counter()
    if pipe is not None:
        pipe.set_progress_bar_config(disable=not sys.stderr.isatty(), leave=False)
    try:
        yield
    finally:
        if pipe is not None:
            pipe.set_progress_bar_config(disable=True)
    logger.info("Final stage done: %s in %.1f s", what, time.perf_counter() - start)
