"""Checkpoints: model, optimiser (a minimiser's state includes its base optimiser's), every component's state
(method modules, adaptive weights, loss scaler), progress, metric history and every RNG state, as tensors and
plain containers (loadable with ``weights_only=True``). A resumed run continues bit-for-bit on CPU.

Format 2 (the component redesign) stores ``components``; format-1 files are still evaluated (their flat config is
migrated by ``robustlab.config.migrate_format1``), not resumed."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from robustlab.core.io import load_torch, save_torch

FORMAT = 2
READABLE = (1, 2)


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "generators": {k: g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: Path, *, model, optimizer, epoch: int, step: int, history: list, best: dict,
                    config: dict, rng: dict, rng_ranks: list | None = None, components: dict | None = None,
                    seconds: float = 0.0) -> None:
    """``rng`` is :func:`rng_state` of this process, ``rng_ranks`` every rank's under DDP; ``components`` the
    state of everything else the run owns (method, loss scaler, diagnostics); ``seconds`` the run's wall time so
    far, over all its attempts."""
    save_torch(path, {"format": FORMAT, "epoch": epoch, "step": step, "seconds": seconds, "model": model.state_dict(),
                      "optimizer": optimizer.state_dict(), "rng": rng, "rng_ranks": rng_ranks, "history": history,
                      "best": best, "config": config, "components": components or {}})


def history_seconds(history: list[dict]) -> float:
    """The wall time of the epochs in a run's history (its metrics rows): each epoch's training plus monitor seconds."""
    return sum(float(r.get("seconds") or 0) + float(r.get("eval_seconds") or 0) for r in history)


def save_weights(path: Path, *, model, epoch: int, config: dict, metrics: dict) -> None:
    save_torch(path, {"format": FORMAT, "epoch": epoch, "model": model.state_dict(), "config": config,
                      "metrics": metrics})


def epoch_file(epoch: int) -> str:
    """The file name of the weights kept after ``epoch`` (``train.keep_epochs`` / ``keep_every``)."""
    return f"epoch_{epoch:04d}.pt"


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    ckpt = load_torch(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") not in READABLE or "model" not in ckpt:
        raise ValueError(f"{path}: not a robustlab checkpoint (formats {', '.join(map(str, READABLE))})")
    return ckpt
