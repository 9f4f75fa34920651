"""Reading and writing bare weights: a safetensors file (extra ``safetensors``) or a torch file read with
``weights_only=True`` (a state dict, or a robustlab checkpoint whose ``model`` entry is taken)."""
from __future__ import annotations

from pathlib import Path

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.io import load_torch, write_bytes


def _safetensors(what: str):
    try:
        import safetensors.torch
    except ImportError:
        raise ConfigError(f"{what}: .safetensors files need the safetensors package: "
                          "pip install 'robustlab[safetensors]'") from None
    return safetensors.torch


def read_weights(path: str | Path, key: str = "--weights") -> dict[str, torch.Tensor]:
    """A state dict from ``path``; ``key`` names the setting in errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: {path}: not found")
    if path.suffix == ".safetensors":
        try:
            return _safetensors(key).load_file(str(path))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{key}: {path}: not a readable safetensors file ({type(exc).__name__})") from None
    try:
        state = load_torch(path)
    except Exception as exc:
        raise ConfigError(f"{key}: {path}: not a safetensors file or a torch state dict readable with "
                          f"weights_only=True ({type(exc).__name__})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]        # a robustlab checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{key}: {path}: holds a {type(state).__name__}, not a state dict of tensors")
    return state


def write_safetensors(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Contiguous CPU copies of ``state`` (shared storage is duplicated, as safetensors requires), atomically."""
    st = _safetensors("--format safetensors")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    write_bytes(Path(path), st.save(tensors, metadata=metadata))
