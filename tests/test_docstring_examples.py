"""The `Example:` blocks of the public pipelines' and the scheduler's docstrings run, offline.

Each ```py block of a docstring runs in a fresh working directory that holds `outputs/simple-ddpm` (the folder
training leaves behind, for a tiny random UNet on 1-channel 8x8 images with the default scheduler, as in
tests/test_docs.py), `photo.png` (an 8x8 grayscale image) and `mask.png` (white in its left half)."""

import inspect
import re

import numpy as np
import pytest
from PIL import Image
from tiny_pipeline import save_trained_folder, tiny_unet

from simple_ddpm import (
    SimpleDDPMImg2ImgPipeline,
    SimpleDDPMInpaintPipeline,
    SimpleDDPMInversionPipeline,
    SimpleDDPMPipeline,
    SimpleDDPMScheduler,
)

DOCUMENTED = [
    SimpleDDPMPipeline,
    SimpleDDPMImg2ImgPipeline,
    SimpleDDPMInpaintPipeline,
    SimpleDDPMInversionPipeline,
    SimpleDDPMScheduler,
]
EXAMPLE = re.compile(r"^ *Example:\n\n *```py\n(?P<code>.*?)\n *```", re.MULTILINE | re.DOTALL)


def examples(documented: type) -> list[str]:
    return [inspect.cleandoc(match["code"]) for match in EXAMPLE.finditer(documented.__doc__ or "")]


def test_examples_are_found_in_a_docstring():
    documented = type("Documented", (), {"__doc__": "Text.\n\n    Example:\n\n    ```py\n    x = 1\n    ```\n"})
    assert examples(documented) == ["x = 1"]


@pytest.mark.parametrize("documented", DOCUMENTED, ids=lambda documented: documented.__name__)
def test_docstring_example_runs(documented, tmp_path, monkeypatch):
    code = examples(documented)
    assert len(code) == 1, f"{documented.__name__} has {len(code)} Example: blocks"
    pipe = SimpleDDPMPipeline(unet=tiny_unet(0, channels=1), scheduler=SimpleDDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    save_trained_folder(pipe, tmp_path / "outputs" / "simple-ddpm")
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(tmp_path / "photo.png")
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, :4] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    exec(compile(code[0], f"{documented.__name__} docstring", "exec"), {"__name__": "docstring_example"})
