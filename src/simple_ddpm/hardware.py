"""What the device can do fast: bfloat16, fused AdamW, torch.compile. Each answer is a plain check or a short
measurement made before the work, so that a run that asks for something the machine lacks falls back with one
warning, and "auto" picks what is faster here rather than what should be."""

import copy
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from filelock import FileLock
from filelock import Timeout as FileLockTimeout
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")
MEASURED_PRECISIONS = ("no", "bf16")  # what "auto" chooses between by measurement (fp16 autocast needs a GPU)
# bf16 is taken only when it saves at least this share of the float32 time: a tie is noise, and float32 is exact.
MIN_BF16_GAIN = 0.05
PRECISION_CACHE_ENV = "SIMPLE_DDPM_CACHE"
PRECISION_LOCK_TIMEOUT_S = 600  # a measurement takes 5 to 60 s (docs/performance.md); a lock held longer is stuck


def native_bf16(device_type: str) -> bool:
    """Whether bfloat16 matrix and convolution kernels run natively: a CUDA GPU of compute capability 8 or later,
    or a CPU with AVX512-BF16 or AMX instructions (as cpuinfo reports them). oneDNN also runs bf16 on plain
    AVX-512 by converting to float32, which is why its own `_is_mkldnn_bf16_supported` is not the answer here."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


@dataclass
class PrecisionChoice:
    """An autocast precision ("no", "bf16", "fp16") and why: the option or launcher that chose it, the GPU's
    native bf16, or a measurement (`seconds`: per call in each candidate precision; `cached`: measured earlier)."""

    precision: str
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    def describe(self) -> str:
        if not self.seconds:
            return f"{self.precision} precision ({self.reason})"
        times = ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in self.seconds.items())
        return f"{self.precision} precision ({self.reason}{' earlier, cached' if self.cached else ''}: {times})"


def interleaved_seconds(
    calls: dict[str, Callable[[], object]],
    rounds: int = 3,
    clock: Callable[[], float] = time.perf_counter,
    settled: Callable[[dict[str, float]], bool] = lambda seconds: False,
) -> dict[str, float]:
    """Seconds of one call of each named callable: one warm-up call each, then up to `rounds` rounds that call
    each once in turn (a shared machine's load then hits them alike); the fastest round of each. Stops early
    once `settled` says the times so far decide."""
    for call in calls.values():
        call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = clock()
            call()
            seconds[name].append(clock() - start)
        if settled({name: min(times) for name, times in seconds.items()}):
            break
    return {name: min(times) for name, times in seconds.items()}


# After one round, a bf16/float32 ratio outside these bounds decides without more rounds (emulated bf16 is 1.5-2x).
CLEAR_RATIOS = (0.7, 1.3)


def clearly_decided(seconds: dict[str, float]) -> bool:
    ratio = seconds["bf16"] / seconds["no"]
    return not CLEAR_RATIOS[0] <= ratio <= CLEAR_RATIOS[1]


def faster_precision(seconds: dict[str, float]) -> str:
    """The precision to use given each candidate's seconds: bf16 where it took at most (1 - MIN_BF16_GAIN) of
    float32's time, else "no"."""
    return "bf16" if seconds["bf16"] <= (1 - MIN_BF16_GAIN) * seconds["no"] else "no"


def unet_calls(
    unet: torch.nn.Module, batch_shape: tuple[int, ...], training: bool, channels_last: bool = False
) -> dict[str, Callable[[], None]]:
    """One call of `unet` on a random batch per candidate precision: forward and backward (training), or
    forward only under no_grad (sampling). They run on a copy, so the UNet's weights and gradients are untouched."""
    model = copy.deepcopy(unet).train(training)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    device = next(model.parameters()).device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    sample = torch.randn(batch_shape, device=device).contiguous(memory_format=memory_format)
    timesteps = torch.randint(0, 1000, batch_shape[:1], device=device)
    conditioning = {}
    if getattr(model.config, "num_class_embeds", None):
        conditioning["class_labels"] = torch.randint(0, model.config.num_class_embeds, batch_shape[:1], device=device)

    def call(precision: str) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if training:
                output = model(sample, timesteps, **conditioning).sample
                output.float().square().mean().backward()
                model.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    model(sample, timesteps, **conditioning)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the wall time then covers the queued kernels

    return {precision: (lambda precision=precision: call(precision)) for precision in MEASURED_PRECISIONS}


def unet_seconds(
    unet: torch.nn.Module, batch_shape: tuple[int, ...], training: bool, channels_last: bool = False, rounds: int = 3
) -> dict[str, float]:
    """Seconds of one `unet_calls` call per candidate precision (`interleaved_seconds`; one round when bf16 is
    clearly faster or slower), drawing its random inputs from a forked generator: measuring does not move the
    run's random stream."""
    device = next(unet.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return interleaved_seconds(
            unet_calls(unet, batch_shape, training, channels_last), rounds, settled=clearly_decided
        )


def precision_cache_path() -> Path:
    """The measured choices of this machine: $SIMPLE_DDPM_CACHE/precision.json, default under $HF_HOME."""
    from huggingface_hub import constants

    return Path(os.environ.get(PRECISION_CACHE_ENV) or Path(constants.HF_HOME) / "simple_ddpm") / "precision.json"


def measurement_key(unet: torch.nn.Module, batch_shape: tuple[int, ...], training: bool, **setup) -> str:
    """What a measured time depends on: the machine (CPU or GPU, threads, torch), the UNet's config, the batch
    shape, training or sampling, and `setup` (e.g. processes, channels_last)."""
    device = next(unet.parameters()).device
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{device.type} {_cpu_model_name()} {torch.backends.cpu.get_cpu_capability()}"
    description = {
        "machine": machine,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "unet": {key: value for key, value in dict(unet.config).items() if not key.startswith("_")},
        "batch_shape": list(batch_shape),
        "training": training,
        **setup,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def read_cached_choice(key: str, path: Path | None = None) -> PrecisionChoice | None:
    path = path or precision_cache_path()
    try:
        entry = json.loads(path.read_text())[key]
        return PrecisionChoice(entry["precision"], "measured", entry["seconds"], cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_cached_choice(key: str, choice: PrecisionChoice, path: Path | None = None) -> None:
    """Add `choice` to the cache file (written whole and renamed into place); an unwritable cache is skipped."""
    path = path or precision_cache_path()
    try:
        entries = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = {"precision": choice.precision, "seconds": choice.seconds}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(entries, indent=1))
        partial.replace(path)
    except OSError:
        pass


def measured_precision(
    key: str, measure: Callable[[], dict[str, float]], cache_path: Path | None = None
) -> PrecisionChoice:
    """The cached choice for `key`, else the faster precision of `measure()`'s times, cached. Runs started side by
    side on one machine take turns through a lock beside the cache: the first measures, the others read its choice
    (measuring at the same time, they would each time a contended machine and might choose differently). Where the
    lock cannot be taken (an unwritable cache, or held for PRECISION_LOCK_TIMEOUT_S), it measures without it."""
    cache_path = cache_path or precision_cache_path()
    lock = FileLock(cache_path.with_name(f"{cache_path.name}.lock"))
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=PRECISION_LOCK_TIMEOUT_S)
    except (OSError, FileLockTimeout):
        return _cached_or_measured(key, measure, cache_path)
    try:
        return _cached_or_measured(key, measure, cache_path)
    finally:
        lock.release()


def _cached_or_measured(key: str, measure: Callable[[], dict[str, float]], cache_path: Path) -> PrecisionChoice:
    cached = read_cached_choice(key, cache_path)
    if cached is not None:
        return cached
    seconds = measure()
    choice = PrecisionChoice(faster_precision(seconds), "measured", seconds)
    write_cached_choice(key, choice, cache_path)
    return choice


def resolve_mixed_precision(
    requested: str,
    launcher_choice: str | None,
    device_type: str,
    measure: Callable[[], PrecisionChoice] | None = None,
) -> PrecisionChoice:
    """The autocast precision of a run: `requested` unless it is "auto"; "auto" keeps a precision chosen through
    `accelerate launch --mixed_precision` or `accelerate config` (`launcher_choice`, other than "no"); on a CUDA
    GPU it is bf16 where the GPU has it natively; elsewhere it is "no" where bf16 is not native, and where it is,
    `measure()` decides (see `measured_precision`); without a measurement it is "no"."""
    if requested != "auto":
        return PrecisionChoice(requested, "--mixed_precision")
    if launcher_choice not in (None, "", "no"):
        return PrecisionChoice(launcher_choice, "chosen by accelerate launch or accelerate config")
    if device_type == "cuda":
        native = native_bf16(device_type)
        return PrecisionChoice("bf16" if native else "no", f"{'' if native else 'no '}native bf16 on this GPU")
    if not native_bf16(device_type):
        # Emulated bf16 (oneDNN converts to float32 on plain AVX-512) is slower than float32 (benchmarks/RESULTS.md):
        # not worth the start-up passes, and a tie in a noisy measurement of a small UNet must not make a run's
        # numbers depend on the machine's load.
        return PrecisionChoice("no", f"bf16 is not native on this {device_type.upper()}")
    if measure is None:
        return PrecisionChoice("no", "not measured")
    return measure()


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
