"""`simple-ddpm sample --class ... --guidance-scale W` on a tiny class-conditional pipeline, against direct calls."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import one_line_error, pipe_folder  # noqa: F401 (a fixture)
from tiny_pipeline import tiny_unet

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from simple_ddpm.cli import main
from simple_ddpm.image_processing import image_grid


@pytest.fixture
def conditional_folder(tmp_path):
    unet = tiny_unet(channels=1, num_class_embeds=4)
    with torch.no_grad():  # embeddings far apart, so that the class visibly matters
        unet.class_embedding.weight.mul_(10)
    scheduler = SimpleDDPMScheduler(num_train_timesteps=10, beta_end=0.2)
    pipe = SimpleDDPMPipeline(unet=unet, scheduler=scheduler, class_names=["cat", "dog", "7"])
    pipe.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_sample_grid_has_one_row_per_class_guided_as_the_pipeline_guides(conditional_folder, tmp_path):
    grid_path = tmp_path / "grid.png"
    status = main(
        ["sample", str(conditional_folder), "--class", "dog", "--class", "0", "--class", "7", "--num-images", "2"]
        + ["--guidance-scale", "1.5", "--num-inference-steps", "5", "--batch-size", "4", "--output", str(grid_path)]
        + ["--device", "cpu"]
    )
    assert status == 0
    pipe = SimpleDDPMPipeline.from_pretrained(conditional_folder)
    pipe.set_progress_bar_config(disable=True)
    labels = [1, 1, 0, 0, 2, 2]  # "7" is a class name, so the class at index 2
    alone = [
        pipe(
            class_labels=[label],
            guidance_scale=1.5,
            generator=[torch.Generator().manual_seed(i)],
            num_inference_steps=5,
            output_type="pt",
        )[0]
        for i, label in enumerate(labels)
    ]
    expected = image_grid(torch.cat(alone), cols=2)
    assert expected.size == (2 * 33 + 1, 3 * 33 + 1)
    np.testing.assert_array_equal(np.asarray(Image.open(grid_path)), np.asarray(expected))
    unguided = pipe(class_labels=[1], generator=[torch.Generator().manual_seed(0)], num_inference_steps=5)
    assert not np.array_equal(
        np.asarray(unguided.images[0]), np.asarray(pipe.numpy_to_pil(alone[0].permute(0, 2, 3, 1).numpy())[0])
    )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--class", "bird"], "Unknown class name 'bird'; valid names are: cat, dog, 7."),
        (["--class", "4"], r"Class label 4 is out of range; valid labels are 0..2 \(3: no label\)."),
        (["--guidance-scale", "2"], "--guidance-scale needs --class"),
        (["--class", "cat", "--guidance-scale", "-1"], "guidance_scale must be a finite number >= 0"),
    ],
)
def test_bad_class_or_guidance_ends_with_one_line_and_status_2(conditional_folder, capsys, arguments, message):
    capsys.readouterr()
    assert main(["sample", str(conditional_folder), "--num-inference-steps", "2", "--device", "cpu", *arguments]) == 2
    assert re.search(message, one_line_error(capsys, "sample"))


def test_class_on_an_unconditional_model_ends_with_one_line(pipe_folder, capsys):  # noqa: F811
    capsys.readouterr()
    assert main(["sample", str(pipe_folder), "--class", "0", "--num-inference-steps", "2", "--device", "cpu"]) == 2
    assert "--class needs a class-conditional model" in one_line_error(capsys, "sample")
