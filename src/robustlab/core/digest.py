"""Content digests: what a resumable state depends on is keyed by its content, not by a file name (weights
replaced under the same name, or other points, must never resume an old evaluation)."""
from __future__ import annotations

import hashlib
from typing import Iterable

import torch


def _update(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def tensors_digest(tensors: Iterable[torch.Tensor]) -> str:
    """sha256 (first 16 hex digits) of the tensors' dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        _update(h, t)
    return h.hexdigest()[:16]


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of a model's state dict: every parameter and buffer, by name."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        if torch.is_tensor(t):
            _update(h, t)
    return h.hexdigest()[:16]
