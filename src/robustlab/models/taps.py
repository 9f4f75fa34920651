"""Feature taps: the outputs of named submodules of any model, captured by forward hooks during ordinary
forward passes (no architecture edits). Methods that regularise features (ARAT's invariance loss) use them::

    with FeatureTaps(model, ["1.layer4.0.bn1", "1.layer4.1.bn2"], transform=relu_gap) as taps:
        logits = model(x)
        z = taps.features            # {"1.layer4.0.bn1": tensor, ...} from the last forward pass

Names are those of ``model.named_modules()``; an unknown name raises a ``KeyError`` that lists similar ones.
"""
from __future__ import annotations

import difflib
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def relu_gap(t: torch.Tensor) -> torch.Tensor:
    """ReLU, then global average pooling over the spatial axes: [B, C, H, W] -> [B, C]."""
    t = F.relu(t)
    return t.mean(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t


class FeatureTaps:
    def __init__(self, model: nn.Module, names: Sequence[str], transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        modules = dict(model.named_modules())
        for name in names:
            if name not in modules:
                near = difflib.get_close_matches(name, list(modules), n=4)
                raise KeyError(f"feature tap {name!r}: no such module" + (f"; did you mean {', '.join(near)}?" if near else ""))
        self.names = list(names)
        self.transform = transform
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self.features[name] = self.transform(output) if self.transform is not None else output
        return hook

    def clear(self) -> None:
        self.features = {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
