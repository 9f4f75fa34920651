"""Device, precision, memory format and thread settings."""
from __future__ import annotations

import contextlib
import functools

import torch

from robustlab.config import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: got 'cuda' but no CUDA device is available; allowed here: auto, cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512_BF16 or AMX); without them bf16
    autocast is emulated and measured ~20x slower than fp32 (AVX2-only EPYC, benchmarks/RESULTS.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_factory(precision: str, device: torch.device, warn=None):
    """A zero-argument context-manager factory: fp32 (no autocast), bf16 or fp16 autocast."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16() and warn is not None:
        warn("warning: this CPU has no native bf16 (no AVX512_BF16/AMX): bf16 autocast is emulated and much "
             "slower than fp32 here; use train.precision=fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 needs CUDA; use bf16 on CPU")
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
