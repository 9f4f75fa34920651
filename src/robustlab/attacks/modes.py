"""The one place that switches a model's train/eval mode for an attack, and restores it exactly.

Papers differ on the BatchNorm/dropout mode used while crafting training attacks (spec section 0):
the fast-AT, ELLE, N-FGSM, GradAlign and co_features codes attack in train mode (batch statistics, running
statistics updated); memorization-AT attacks in eval mode. Evaluation attacks always use eval mode.
"""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn

MODES = ("train", "eval", "keep")


@contextmanager
def attack_mode(model: nn.Module, mode: str):
    """Put ``model`` in ``mode`` ('train', 'eval' or 'keep') and restore every module's flag on exit."""
    if mode not in MODES:
        raise ValueError(f"attack mode: got {mode!r}; allowed: {', '.join(MODES)}")
    saved = [(m, m.training) for m in model.modules()]
    try:
        if mode != "keep":
            model.train(mode == "train")
        yield model
    finally:
        for m, flag in saved:
            m.training = flag
