"""training/train.py with one fault injected, for the reliability tests; the options are train.py's.

    CRASH_WHILE_WRITING=checkpoint-4/optimizer.bin CRASH_WITH=exit python tests/faulty_train.py [options]
    NAN_WEIGHTS_AFTER_STEP=3 python tests/faulty_train.py [options]

CRASH_WHILE_WRITING: the first file whose path ends with it gets half its bytes, then the process dies at once
(CRASH_WITH=exit, as if killed: nothing is cleaned up) or the write raises OSError(ENOSPC) (CRASH_WITH=enospc, a
full disk). Both torch.save and safetensors' save_file (accelerate's and diffusers' writers) are patched.

NAN_WEIGHTS_AFTER_STEP: the optimizer step with that number leaves a NaN in the first weight, as an overflow
would, while that step's loss (computed before the update) is still finite.
"""

import errno
import io
import os
import runpy
import sys
from pathlib import Path

import accelerate.utils.other
import safetensors.torch
import torch

TRAIN = Path(__file__).resolve().parents[1] / "training" / "train.py"


def fail_half_way(serialized: bytes, path: str) -> None:
    with open(path, "wb") as file:
        file.write(serialized[: len(serialized) // 2])
    if os.environ.get("CRASH_WITH", "exit") == "exit":
        os._exit(137)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def is_target(path) -> bool:
    return isinstance(path, str | os.PathLike) and Path(path).as_posix().endswith(os.environ["CRASH_WHILE_WRITING"])


def patch_writers() -> None:
    original_torch_save, original_save_file = torch.save, safetensors.torch.save_file

    def torch_save(obj, f, *args, **kwargs):
        if is_target(f):
            buffer = io.BytesIO()
            original_torch_save(obj, buffer, *args, **kwargs)
            fail_half_way(buffer.getvalue(), str(f))
        return original_torch_save(obj, f, *args, **kwargs)

    def save_file(tensors, filename, metadata=None):
        if is_target(filename):
            fail_half_way(safetensors.torch.save(tensors, metadata=metadata), str(filename))
        return original_save_file(tensors, filename, metadata=metadata)

    torch.save = torch_save
    safetensors.torch.save_file = save_file
    accelerate.utils.other.safe_save_file = save_file


def patch_optimizer(nan_after_step: int) -> None:
    original_step = torch.optim.AdamW.step
    steps = 0

    def step(self, *args, **kwargs):
        nonlocal steps
        result = original_step(self, *args, **kwargs)
        steps += 1
        if steps == nan_after_step:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return result

    torch.optim.AdamW.step = step


if "CRASH_WHILE_WRITING" in os.environ:
    patch_writers()
if "NAN_WEIGHTS_AFTER_STEP" in os.environ:
    patch_optimizer(int(os.environ["NAN_WEIGHTS_AFTER_STEP"]))
sys.argv = [str(TRAIN), *sys.argv[1:]]
runpy.run_path(str(TRAIN), run_name="__main__")
