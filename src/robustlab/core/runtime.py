"""Device, precision, memory format and thread settings."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import sys

import torch

from robustlab.core.errors import ConfigError


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``key`` names the setting in the error (e.g. ``--device``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: got 'cuda' but no CUDA device is available; allowed here: auto, cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512_BF16 or AMX); without them bf16
    autocast is emulated and measured ~20x slower than fp32 (AVX2-only EPYC, benchmarks/RESULTS.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_factory(precision: str, device: torch.device, warn=None, key: str = "train.precision"):
    """A zero-argument context-manager factory: fp32 (no autocast), bf16 or fp16 autocast."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16() and warn is not None:
        warn("warning: this CPU has no native bf16 (no AVX512_BF16/AMX): bf16 autocast is emulated and much "
             "slower than fp32 here; use train.precision=fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"{key}: fp16 needs CUDA; use bf16 on CPU")
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc mallopt parameters
KEEP_HEAP_BYTES = 1 << 30


@functools.lru_cache(maxsize=None)
def keep_cpu_heap() -> bool:
    """Ask glibc malloc to serve large blocks (up to 1 GiB) from the heap and not to return freed memory
    to the system: activation buffers freed after a step are then reused by the next one instead of being
    unmapped and page-faulted back in. This was the gap between pass counts and the clock for methods with
    big batches of activations (ELLE's 3B triplet on the small CNN: 3.6x -> 3.0x FGSM-AT, 2.6x fused; RESULTS.md
    section 4). The price: the process keeps its peak memory. Linux/glibc only; True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(KEEP_HEAP_BYTES))
                    and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2 * KEEP_HEAP_BYTES - 1)))
    except (OSError, AttributeError):   # not glibc (musl, ...)
        return False
