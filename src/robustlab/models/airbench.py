"""A fast CIFAR network in the style of airbench (Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
2024; its architecture comes from Page's and tysam-code's fast CIFAR-10 training): eight layers, GELU, max-pooling
inside each group, no residual connections.

    x (C x 32 x 32) -> conv 2x2, no padding (24 w) -> norm -> GELU                        31 x 31
      -> group(64 w) -> group(256 w) -> group(256 w)                                    15 -> 7 -> 3
      -> global max-pool -> linear (no bias) -> logits / 9

    group(c):  conv 3x3 (c) -> max-pool 2 -> norm -> GELU -> conv 3x3 (c) -> norm -> GELU

``w`` is the width multiplier. This is the architecture of airbench's ablation baseline (standard initialisation,
the stem's normalisation layer kept); airbench's training-side tricks (the frozen patch-whitening stem initialised
from the data, identity initialisation, lookahead, test-time augmentation) are not part of it. The final 1/9 scale
of the logits is airbench's. Images must be at least ``MIN_SIDE`` = 16 pixels a side (three halvings after the
2 x 2 stem); the model registry refuses smaller ones.
"""
from __future__ import annotations

import torch
from torch import nn

from robustlab.models.resnets import NormLayer

STEM_WIDTH = 24
GROUP_WIDTHS = (64, 256, 256)
LOGIT_SCALE = 1.0 / 9.0
MIN_SIDE = 16


def _scaled(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


class ConvGroup(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm_layer: NormLayer):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), norm_layer(cout), nn.GELU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm_layer(cout), nn.GELU())


class AirbenchNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        c = _scaled(STEM_WIDTH, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 2, padding=0, bias=True), norm_layer(c), nn.GELU())
        groups = []
        for out in GROUP_WIDTHS:
            out = _scaled(out, width)
            groups.append(ConvGroup(c, out, norm_layer))
            c = out
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Linear(c, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.groups(self.stem(x))).flatten(1)) * LOGIT_SCALE
