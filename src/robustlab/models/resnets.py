"""CIFAR-style residual networks: PreActResNet-18 (He et al., 2016b), ResNet-18 (CIFAR stem: 3x3 conv,
no max-pool) and WideResNet(depth, widen, dropout) (Zagoruyko & Komodakis, 2016).

Every normalisation layer is made by ``norm_layer(channels)`` (default ``nn.BatchNorm2d``), so a config can
swap it (split BatchNorm, GroupNorm, none) without editing the architectures."""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import nn


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


NormLayer = Callable[[int], nn.Module]


def shortcut(cin, cout, stride, norm_layer: NormLayer | None):
    """1x1 projection when the shape changes (followed by ``norm_layer`` when given), else None."""
    if stride == 1 and cin == cout:
        return None
    layers = [nn.Conv2d(cin, cout, 1, stride=stride, bias=False)]
    return nn.Sequential(*layers, norm_layer(cout)) if norm_layer is not None else nn.Sequential(*layers)


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.bn1, self.conv1 = norm_layer(cin), conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = norm_layer(cout), conv3x3(cout, cout)
        self.shortcut = shortcut(cin, cout, stride, None)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + sc


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), norm_layer(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), norm_layer(cout)
        self.shortcut = shortcut(cin, cout, stride, norm_layer)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


def _stages(block, widths, blocks, strides, cin, norm_layer: NormLayer):
    layers = []
    for w, n, s in zip(widths, blocks, strides):
        stage = []
        for i in range(n):
            stage.append(block(cin, w, s if i == 0 else 1, norm_layer))
            cin = w
        layers.append(nn.Sequential(*stage))
    return layers


def stage_widths(width: float) -> list[int]:
    """ResNet-18's four stage widths 64, 128, 256, 512 times ``width`` (rounded, at least 4)."""
    return [max(4, int(round(c * width))) for c in (64, 128, 256, 512)]


class PreActResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, norm_layer: NormLayer = nn.BatchNorm2d, width: float = 1.0):
        super().__init__()
        w = stage_widths(width)
        self.conv1 = conv3x3(in_channels, w[0])
        self.layer1, self.layer2, self.layer3, self.layer4 = _stages(PreActBlock, w, [2, 2, 2, 2], [1, 2, 2, 2], w[0],
                                                                     norm_layer)
        self.bn = norm_layer(w[3])
        self.linear = nn.Linear(w[3], num_classes)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        return self.linear(out)


class ResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, norm_layer: NormLayer = nn.BatchNorm2d, width: float = 1.0):
        super().__init__()
        w = stage_widths(width)
        self.conv1, self.bn1 = conv3x3(in_channels, w[0]), norm_layer(w[0])
        self.layer1, self.layer2, self.layer3, self.layer4 = _stages(BasicBlock, w, [2, 2, 2, 2], [1, 2, 2, 2], w[0],
                                                                     norm_layer)
        self.linear = nn.Linear(w[3], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class WideBlock(nn.Module):
    def __init__(self, cin, cout, stride, dropout, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.bn1, self.conv1 = norm_layer(cin), conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = norm_layer(cout), conv3x3(cout, cout)
        self.dropout = dropout
        self.shortcut = shortcut(cin, cout, stride, None)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + sc


class WideResNet(nn.Module):
    """WRN-depth-widen: 3 stages of (depth-4)/6 pre-activation blocks, widths 16k, 32k, 64k."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, widen: int = 10, dropout: float = 0.0,
                 norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.conv1 = conv3x3(in_channels, 16)
        cin, stages = 16, []
        for w, s in zip(widths, [1, 2, 2]):
            blocks = []
            for i in range(n):
                blocks.append(WideBlock(cin, w, s if i == 0 else 1, dropout, norm_layer))
                cin = w
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn = norm_layer(cin)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1))
