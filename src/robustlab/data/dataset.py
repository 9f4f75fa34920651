"""In-memory image sets: one tensor of images (NCHW, uint8 or float in [0,1]) and one of labels."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robustlab.core.errors import DataError  # noqa: F401  (re-exported: data readers raise it)


@dataclass
class ImageSet:
    x: torch.Tensor  # [N, C, H, W], uint8 (0-255) or float32 (0-1 scale; may leave [0,1] after injection)
    y: torch.Tensor  # [N] int64

    def __post_init__(self):
        if self.x.ndim != 4:
            raise DataError(f"images must be [N, C, H, W], got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DataError(f"labels must be [N] with N={len(self.x)}, got shape {tuple(self.y.shape)}")
        self.y = self.y.long()

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.x[index], self.y[index])

    def float(self) -> "ImageSet":
        """Images as float32 on the 0-1 scale."""
        return ImageSet(to_float(self.x), self.y)

    def to(self, device) -> "ImageSet":
        return ImageSet(self.x.to(device), self.y.to(device))


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


@dataclass
class DataBundle:
    """Train / validation / test splits plus what models need to know about the data."""
    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    original_train_labels: torch.Tensor | None = None  # before a label intervention

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of an image tensor on the 0-1 scale."""
    xf = to_float(x)
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
