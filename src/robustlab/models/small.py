"""Small CNNs for CPU-scale work."""
from __future__ import annotations

from torch import nn


class WongMNISTNet(nn.Module):
    """The MNIST net of Wong et al. (2020), "Fast is better than free": conv16-conv32 (4x4, stride 2) - fc100."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int):
        super().__init__()
        side = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(32 * side * side, 100), nn.ReLU(), nn.Linear(100, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class SmallCNN(nn.Module):
    """conv32-conv64-pool-conv128-conv128-pool - fc256 (3x3 convs, ReLU); for 28x28 and 32x32 inputs."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int):
        super().__init__()
        side = image_size // 4

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]

        self.features = nn.Sequential(*conv(in_channels, 32), *conv(32, 64), nn.MaxPool2d(2),
                                      *conv(64, 128), *conv(128, 128), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(128 * side * side, 256), nn.ReLU(), nn.Linear(256, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))
