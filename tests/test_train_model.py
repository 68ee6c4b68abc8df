"""The UNet that training/train.py fits: presets, config files, and pretrained models to fine-tune."""

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler
from training.arguments import parse_args
from training.unet_presets import UNET_PRESETS, build_unet, pretrained_unet_config


def options(tmp_path: Path, *extra: str):
    return parse_args(["--output_dir", str(tmp_path / "out"), *extra])


def test_ddpm_cifar10_preset_is_the_papers_35_7m_parameter_network(tmp_path):
    unet = build_unet(options(tmp_path, "--model_preset", "ddpm-cifar10"), channels=3, resolution=32)
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == 35.7
    assert unet.config.dropout == 0.1
    # self-attention only in the 16x16 level (the second of four at 32x32)
    assert [hasattr(block, "attentions") for block in unet.down_blocks] == [False, True, False, False]


def test_presets_take_size_and_channels_from_the_data(tmp_path):
    for preset in UNET_PRESETS:
        unet = build_unet(options(tmp_path, "--model_preset", preset), channels=1, resolution=16)
        assert (unet.config.sample_size, unet.config.in_channels, unet.config.out_channels) == (16, 1, 1)
        x = torch.zeros(2, 1, 16, 16)
        assert unet(x, torch.tensor([0, 999])).sample.shape == x.shape


def test_a_config_file_gives_a_fresh_unet_of_that_architecture(tmp_path):
    config = dict(UNET_PRESETS["tiny"], block_out_channels=[16, 32], norm_num_groups=4)
    (tmp_path / "unet.json").write_text(json.dumps(config))
    unet = build_unet(options(tmp_path, "--model_config_name_or_path", str(tmp_path / "unet.json")), 3, 8)
    assert list(unet.config.block_out_channels) == [16, 32] and unet.config.in_channels == 3


def test_fine_tuning_starts_from_the_pipelines_weights_and_shape(tmp_path):
    torch.manual_seed(0)
    pretrained = UNet2DModel(**UNET_PRESETS["tiny"], sample_size=8, in_channels=1, out_channels=1)
    SimpleDDPMPipeline(unet=pretrained, scheduler=SimpleDDPMScheduler()).save_pretrained(tmp_path / "pipe")
    args = options(tmp_path, "--model_config_name_or_path", str(tmp_path / "pipe"))
    config = pretrained_unet_config(args.model_config_name_or_path)
    assert (config["sample_size"], config["in_channels"]) == (8, 1)  # the defaults of --resolution, --num_channels
    unet = build_unet(args, channels=1, resolution=8)
    assert all(
        torch.equal(a, b) for a, b in zip(unet.state_dict().values(), pretrained.state_dict().values(), strict=True)
    )


class Constant(torch.nn.Module):
    """A stand-in UNet that always predicts `value`, so the loss has a closed form."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, sample, timestep):
        return type("Output", (), {"sample": self.value.expand_as(sample)})


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("weighting", ["simple", "elbo", "min_snr", "p2"])
def test_loss_is_the_weighted_squared_error_of_the_prediction_types_target(prediction_type, weighting):
    from simple_ddpm.training_losses import diffusion_loss

    scheduler = SimpleDDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    x0 = torch.linspace(-1, 1, 4 * 2 * 3 * 3).view(4, 2, 3, 3)
    prediction = torch.full((1, 2, 3, 3), 0.25)
    torch.manual_seed(0)
    loss = diffusion_loss(
        Constant(prediction), scheduler, x0, loss_weighting=weighting, snr_gamma=5.0, p2_gamma=0.5, p2_k=2.0
    )

    torch.manual_seed(0)  # the same draws, in the order Algorithm 1 takes them: noise, then t
    noise, t = torch.randn_like(x0), torch.randint(0, 100, (4,))
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100, dtype=torch.float64), 0)[t].view(4, 1, 1, 1)
    target = {
        "epsilon": noise.double(),
        "sample": x0.double(),
        "v_prediction": alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0,
    }[prediction_type]
    squared_error = (prediction.double() - target).pow(2).mean(dim=(1, 2, 3))
    weights = scheduler.loss_weights(t, weighting, 5.0, p2_gamma=0.5, p2_k=2.0).double()
    expected = (weights * squared_error).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_final_bound_is_exact_only_where_its_unet_work_is_a_small_share_of_the_run(tmp_path):
    from training import train

    args = options(tmp_path)  # T = 1000
    share = train.EXACT_BOUND_MAX_SHARE
    # exact: 180 images x 1000 terms <= 0.25 x 3 x 2000 steps x 128 images (the quickstart)
    assert 180 * 1000 <= share * 3 * 2000 * 128
    assert train.final_eval_timesteps(args, num_eval_images=180, images_seen=2000 * 128) is None
    # estimated: 256 images x 1000 terms against 200,000 images seen
    assert train.final_eval_timesteps(args, num_eval_images=256, images_seen=200_000) == train.ESTIMATE_TIMESTEPS
    # the boundary: exactly that share of the run's work is still exact, one image more is not
    images_seen = math.ceil(256 * 1000 / (share * 3))
    assert 256 * 1000 <= share * 3 * images_seen < 257 * 1000
    assert train.final_eval_timesteps(args, num_eval_images=256, images_seen=images_seen) is None
    assert train.final_eval_timesteps(args, num_eval_images=257, images_seen=images_seen) == 100
    # a chosen K is kept, and K >= T - 1 is the exact bound
    assert train.final_eval_timesteps(options(tmp_path, "--final_eval_timesteps", "20"), 256, 10**9) == 20
    assert train.final_eval_timesteps(options(tmp_path, "--final_eval_timesteps", "999"), 256, 1) is None
