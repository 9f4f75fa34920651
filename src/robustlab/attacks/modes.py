"""The one place that switches module modes (train/eval for an attack; BatchNorm statistics for extra
optimiser passes) and restores them exactly.

Papers differ on the BatchNorm/dropout mode used while crafting training attacks (README, Design):
the fast-AT, ELLE, N-FGSM, GradAlign and co_features codes attack in train mode (batch statistics, running
statistics updated); memorization-AT attacks in eval mode. Evaluation attacks always use eval mode.
"""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn

from robustlab.core.module_state import attribute_set

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


@contextmanager
def bn_statistics_frozen(*modules: nn.Module):
    """BatchNorm layers in training mode keep normalising with batch statistics but stop updating their
    running statistics (``track_running_stats`` off while inside); every flag is restored on exit. Used for
    the second and later closure passes of an optimiser step (SAM-type minimisers): the running statistics
    see each batch once."""
    layers = [m for root in modules for m in root.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    with attribute_set(layers, "track_running_stats", False):
        yield
