"""A seeded validation split held out from the training set."""
from __future__ import annotations

import torch

from robustlab.data.dataset import DataError, ImageSet


def split_validation(train: ImageSet, val_size: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """Hold out ``val_size`` training images chosen by a generator seeded with ``seed``."""
    if val_size >= len(train):
        raise DataError(f"data.val_size={val_size} leaves no training images (the training set has {len(train)})")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(perm[val_size:].sort().values), train.subset(perm[:val_size].sort().values)


def subset_training(train: ImageSet, size: int, seed: int) -> ImageSet:
    """``size`` training images chosen by a generator seeded with ``seed`` (another stream than the validation
    split's), in their original order; ``size`` 0 keeps them all. Memorisation studies shrink the training set
    rather than the model (spec 9.4)."""
    if size == 0 or size >= len(train):
        return train
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 7919))
    return train.subset(perm[:size].sort().values)
