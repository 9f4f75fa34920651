"""Device, precision, memory format and thread settings."""
from __future__ import annotations

import contextlib
import functools

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: got 'cuda' but no CUDA device is available; allowed here: auto, cpu")
    return torch.device(name)


def autocast_factory(precision: str, device: torch.device):
    """A zero-argument context-manager factory: fp32 (no autocast), bf16 or fp16 autocast."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise RuntimeError("train.precision: fp16 needs CUDA; use bf16 on CPU")
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
