"""Other architecture families for transfer studies (targets of other families than the surrogate's), CIFAR
variants, each taking the normalisation-layer factory and a width multiplier (CPU twins use narrow ones):

- **VGG-11/13/16/19 with BatchNorm** (Simonyan & Zisserman, 2015; the CIFAR variant of the transfer literature):
  3x3 conv-norm-ReLU stages with 2x2 max-pooling (ceil mode, so 28x28 and 8x8 inputs work), global average pooling,
  one linear classifier.
- **MobileNet-v2** (Sandler et al., 2018; CIFAR variant: stride-1 stem and first downsampling stage removed):
  inverted residual blocks (1x1 expand, 3x3 depth-wise, 1x1 linear projection), a residual connection when the
  shape is kept, a 1x1 conv to 1280 channels, global average pooling, linear classifier.
"""
from __future__ import annotations

from torch import nn

from robustlab.models.resnets import NormLayer

VGG_STAGES = {11: [1, 1, 2, 2, 2], 13: [2, 2, 2, 2, 2], 16: [2, 2, 3, 3, 3], 19: [2, 2, 4, 4, 4]}
VGG_WIDTHS = [64, 128, 256, 512, 512]


def _scaled(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


class VGG(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int = 16, width: float = 1.0,
                 norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        layers, c = [], in_channels
        for convs, out in zip(VGG_STAGES[depth], VGG_WIDTHS):
            out = _scaled(out, width)
            for _ in range(convs):
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), norm_layer(out), nn.ReLU(inplace=True)]
                c = out
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int, norm_layer: NormLayer):
        super().__init__()
        hidden = cin * expansion
        layers = []
        if expansion != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), norm_layer(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), norm_layer(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), norm_layer(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out


# (expansion, channels, blocks, stride); the CIFAR variant keeps stride 1 in the second stage
MOBILENET_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        c = _scaled(32, width)
        layers = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), norm_layer(c), nn.ReLU6(inplace=True)]
        for expansion, out, blocks, stride in MOBILENET_V2_STAGES:
            out = _scaled(out, width)
            for i in range(blocks):
                layers.append(InvertedResidual(c, out, stride if i == 0 else 1, expansion, norm_layer))
                c = out
        last = _scaled(1280, width)
        layers += [nn.Conv2d(c, last, 1, bias=False), norm_layer(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))
