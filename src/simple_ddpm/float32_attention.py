"""Self-attention in float32 under CPU autocast.

Under bf16 autocast on a CPU, torch's fused attention kernel (`_scaled_dot_product_flash_attention_for_cpu`) and
above all its backward are several times slower in bf16 than in float32 when heads are small (dimension 8-16,
diffusers' default `attention_head_dim=8`): measured in benchmarks/bench_attention.py. The attention blocks of a
UNet are a small share of its FLOPs, so running them in float32 costs little where bf16 matmuls are native and
removes the slowdown; the convolutions around them stay in bf16.
"""

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class Float32AttnProcessor(AttnProcessor2_0):
    """diffusers' `AttnProcessor2_0`, run in float32 with autocast off when CPU autocast is on; unchanged
    otherwise (float32 without autocast, GPUs, a UNet whose weights are bf16)."""

    # The arguments are named as in AttnProcessor2_0: `Attention.forward` passes only those its processor names.
    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if hidden_states.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                float32 = [None if t is None else t.float() for t in (encoder_hidden_states, attention_mask, temb)]
                return super().__call__(attn, hidden_states.float(), *float32)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def use_float32_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Give every attention layer of `model` that has diffusers' default processor a `Float32AttnProcessor`
    (processors are not saved: checkpoints and `save_pretrained` are unchanged). Returns `model`."""
    for module in model.modules():
        if isinstance(module, Attention) and type(module.processor) is AttnProcessor2_0:
            module.set_processor(Float32AttnProcessor())
    return model
