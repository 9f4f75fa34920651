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
    rather than the model (Dong et al., ICLR 2022; docs/memorisation.md)."""
    if size == 0 or size >= len(train):
        return train
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 7919))
    return train.subset(perm[:size].sort().values)


def balanced_subset(train: ImageSet, per_class: int, seed: int) -> ImageSet:
    """``per_class`` training images of every class, chosen by a generator seeded with ``seed`` (a stream of its
    own), in their original order; 0 keeps them all. A class with fewer images is an error naming it."""
    if per_class == 0:
        return train
    gen = torch.Generator().manual_seed(seed + 104729)
    chosen = []
    for label in torch.unique(train.y).tolist():
        idx = (train.y == label).nonzero().squeeze(1)
        if len(idx) < per_class:
            raise DataError(f"data.train_per_class={per_class}: class {label} has {len(idx)} training images after "
                            "the validation split")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return train.subset(torch.cat(chosen).sort().values)
