"""What the device can do fast: native bfloat16, fused AdamW, torch.compile. Each answer is a plain check made
before training, so that a run that asks for something the machine lacks falls back with one warning."""

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")


def native_bf16(device_type: str) -> bool:
    """Whether bfloat16 matrix and convolution kernels run natively: a CUDA GPU of compute capability 8 or later,
    or a CPU whose oneDNN has bf16 kernels (AVX512-BF16 or AMX). Elsewhere bf16 autocast is emulated and slower."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":
        try:
            return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_mixed_precision(requested: str, launcher_choice: str | None, device_type: str) -> str:
    """The autocast precision of a run: `requested` unless it is "auto"; "auto" keeps a precision chosen through
    `accelerate launch --mixed_precision` or `accelerate config` (`launcher_choice`, other than "no"), else
    bf16 where the device has native bf16 (measured faster: benchmarks/RESULTS.md), else "no"."""
    if requested != "auto":
        return requested
    if launcher_choice not in (None, "", "no"):
        return launcher_choice
    return "bf16" if native_bf16(device_type) else "no"


def fused_adamw_available(device_type: str) -> bool:
    """Whether torch has a fused (one kernel for all tensors) AdamW for this device type."""
    return device_type in _get_fused_kernels_supported_devices()


def compile_unavailable_reason(device_type: str) -> str | None:
    """Why torch.compile's default backend (inductor) cannot build kernels here, or None if it can: on a CPU it
    needs a C++ compiler, on a GPU Triton."""
    if device_type == "cpu":
        from torch._inductor import cpp_builder, exc

        try:
            cpp_builder.get_cpp_compiler()  # inductor's own search (config.cpp.cxx, $CXX, g++), as it will run it
        except exc.InvalidCxxCompiler:
            return "no C++ compiler found (install g++ or set CXX)"
        return None
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed"
    return f"torch.compile is not supported on {device_type} here"
