"""training/train.py with a file writer that fails half-way through one file, for the reliability tests.

    CRASH_WHILE_WRITING=checkpoint-4/optimizer.bin CRASH_WITH=exit python tests/crashing_train.py [train options]

The first file whose path ends with CRASH_WHILE_WRITING gets half its bytes, then the process dies at once
(CRASH_WITH=exit, as if killed: nothing is cleaned up) or the write raises OSError(ENOSPC) (CRASH_WITH=enospc, a
full disk). Both torch.save and safetensors' save_file (accelerate's and diffusers' writers) are patched.
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
TARGET = os.environ["CRASH_WHILE_WRITING"]
MODE = os.environ.get("CRASH_WITH", "exit")


def fail_half_way(serialized: bytes, path: str) -> None:
    with open(path, "wb") as file:
        file.write(serialized[: len(serialized) // 2])
    if MODE == "exit":
        os._exit(137)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def is_target(path) -> bool:
    return isinstance(path, str | os.PathLike) and Path(path).as_posix().endswith(TARGET)


original_torch_save = torch.save
original_save_file = safetensors.torch.save_file


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

sys.path.insert(0, str(TRAIN.parent))
sys.argv = [str(TRAIN), *sys.argv[1:]]
runpy.run_path(str(TRAIN), run_name="__main__")
