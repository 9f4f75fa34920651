"""Data sets by name, splits, interventions and the in-memory loader.

``build_data(cfg.data, seed)`` returns a :class:`DataBundle` (train / val / test, classes, mean, std).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from robustlab.data import offline, readers
from robustlab.data.dataset import DataBundle, DataError, ImageSet, channel_stats, to_float
from robustlab.data.inject import class_carriers, inject_carriers
from robustlab.data.loader import Batch, DeviceLoader
from robustlab.data.labels import symmetric_noise
from robustlab.data.splits import balanced_subset, split_validation, subset_training
from robustlab.core.registry import Registry

# name -> reader(root) -> (train, test, num_classes)
DATASETS: Registry[Callable[[Path], tuple[ImageSet, ImageSet, int]]] = Registry("data set")


def _log(line: str) -> None:
    import sys
    print(line, file=sys.stderr)


def _register(name: str, classes: int, fn):
    DATASETS.register(name)(lambda root: (*fn(root), classes))


_register("cifar10", 10, readers.read_cifar10)
_register("cifar100", 100, readers.read_cifar100)
_register("svhn", 10, readers.read_svhn)
_register("mnist", 10, readers.read_mnist)
_register("fashion_mnist", 10, lambda root: readers.read_mnist(root, "fashion_mnist"))
_register("mnist5k", 10, lambda root: offline.read_mnist5k())
_register("digits", 10, lambda root: offline.read_digits())
_register("synthetic", 4, lambda root: offline.make_synthetic())
_register("cifar10_jpeg", 10, lambda root: readers.read_cifar10_jpeg(root, log=_log))
_register("synthetic_cifar", 10, lambda root: offline.make_synthetic(2048, 512, 10, (3, 32, 32)))


@DATASETS.register("imagefolder")
def _imagefolder(root: Path):
    train, classes = readers.read_image_folder(root, "train")
    test, _ = readers.read_image_folder(root, "test", classes)
    return train, test, len(classes)


def default_root() -> Path:
    return Path(os.environ.get("ROBUSTLAB_DATA", Path.home() / ".cache" / "robustlab" / "data"))


def load(name: str, split: str = "test", root: str | Path | None = None):
    """A registered data set's split as tensors, for use outside training::

        x, y = robustlab.data.load("mnist5k", split="test")    # x: float in [0,1], (N, C, H, W); y: int64 labels

    ``split``: ``train`` (the whole training split, no validation hold-out) or ``test``. ``root``: where the files of
    a file-based set are (default ``$ROBUSTLAB_DATA``, else ``~/.cache/robustlab/data``)."""
    from robustlab.core.errors import ConfigError
    if name not in DATASETS:
        raise ConfigError(f"data set: got {name!r}; allowed: {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ConfigError(f"split: got {split!r}; allowed: train, test")
    train, test, _ = DATASETS.get(name)(Path(root) if root else default_root())
    chosen = train if split == "train" else test
    return to_float(chosen.x), chosen.y


def build_data(cfg, seed: int) -> DataBundle:
    """Read the data set ``cfg.name``, hold out the validation split, apply the configured intervention."""
    root = Path(cfg.root) if cfg.root else default_root()
    train, test, num_classes = DATASETS.get(cfg.name)(root)
    train, val = split_validation(train, cfg.val_size, seed) if cfg.val_size else (train, test.subset(slice(0, 0)))
    train = subset_training(train, cfg.train_size, seed)
    train = balanced_subset(train, getattr(cfg, "train_per_class", 0), seed)
    mean, std = channel_stats(train.x)
    if cfg.inject.kind != "none":
        carriers = class_carriers(num_classes, tuple(train.x.shape[1:]))
        ortho = cfg.inject.kind == "orthogonal"
        train, val, test = (inject_carriers(s, carriers, cfg.inject.beta, ortho) for s in (train, val, test))
    original = train.y.clone()
    if cfg.labels.noise > 0:
        seed_ = seed if cfg.labels.seed is None else cfg.labels.seed
        train = ImageSet(train.x, symmetric_noise(train.y, num_classes, cfg.labels.noise, seed_))
    return DataBundle(cfg.name, train, val, test, num_classes, mean, std, original)


__all__ = ["DATASETS", "Batch", "DataBundle", "DataError", "DeviceLoader", "ImageSet", "build_data", "load",
           "class_carriers", "inject_carriers", "split_validation", "subset_training", "to_float"]
