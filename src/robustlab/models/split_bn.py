"""Split BatchNorm: one normalisation layer with named branches (default ``clean`` and ``adv``) that share nothing but
their position in the network; the convolutions and linear layers around them are shared (ARAT, AdvProp, OAT).

Which branch a forward pass uses is chosen by a scoped context, never by a global flag that could leak::

    with bn_branch(model, "clean"):      # every SplitBatchNorm2d of the model uses its 'clean' branch
        logits_clean = model(x)
    logits_adv = model(x_adv)            # outside any context: each layer's deployed branch

The context restores every layer's branch on exit, also after an exception. Each layer declares its **deployed**
branch (the one evaluation, AutoAttack and exports use): ARAT deploys ``adv``, AdvProp (timm's SplitBatchNorm2d)
deploys the clean one; branches are named, never "the first split" (docs/arat.md). :func:`to_single_bn` turns a
trained split-BN model into a plain one with a chosen branch's BatchNorm (identical outputs on that branch).
In the model each branch is a submodule, so a feature tap can sit on ``<layer>.clean`` or ``<layer>.adv``.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Sequence

from torch import nn

from robustlab.core.module_state import attribute_set


class SplitBatchNorm2d(nn.Module):
    def __init__(self, channels: int, branches: Sequence[str] = ("clean", "adv"), deployed: str = "adv",
                 eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if deployed not in branches or len(set(branches)) != len(branches) or len(branches) < 2:
            raise ValueError(f"split BN: branches {list(branches)} must be >= 2 distinct names containing the "
                             f"deployed one ({deployed!r})")
        self.branches = list(branches)
        self.deployed = deployed
        self.active = deployed
        for name in self.branches:
            self.add_module(name, nn.BatchNorm2d(channels, eps, momentum))

    def forward(self, x):
        return getattr(self, self.active)(x)

    def extra_repr(self) -> str:
        return f"branches={self.branches}, deployed={self.deployed!r}"


def split_layers(model: nn.Module) -> list[SplitBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, SplitBatchNorm2d)]


@contextlib.contextmanager
def bn_branch(model: nn.Module, branch: str):
    """Every split-BN layer of ``model`` uses ``branch`` inside; their branches are restored on exit. A model without
    split BN is left alone (so a method can ask for a branch whether or not the model is split)."""
    layers = split_layers(model)
    for m in layers:
        if branch not in m.branches:
            raise ValueError(f"split BN: no branch {branch!r} (branches: {', '.join(m.branches)})")
    with attribute_set(layers, "active", branch):
        yield


def has_split_bn(model: nn.Module) -> bool:
    return bool(split_layers(model))


def to_single_bn(model: nn.Module, branch: str | None = None) -> nn.Module:
    """A copy of ``model`` whose split-BN layers are replaced by their ``branch``'s BatchNorm2d (default: each
    layer's deployed branch); its outputs equal the split model's on that branch."""
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, SplitBatchNorm2d):
                setattr(module, child_name, getattr(child, branch or child.deployed))
    return out
