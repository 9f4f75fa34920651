"""Readers for the standard on-disk formats, into uint8 NCHW tensors.

- CIFAR-10 / CIFAR-100: the "python version" pickles (``cifar-10-batches-py/data_batch_1..5, test_batch``;
  ``cifar-100-python/train, test``). They are read with a restricted unpickler that accepts only the
  builtin containers and numpy's array reconstruction: a crafted file cannot execute code.
- SVHN: ``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5; ``X`` is [32, 32, 3, N], ``y`` uses 10 for 0), in
  ``root/svhn/`` or at the root itself (torchvision's layout).
- MNIST (and Fashion-MNIST): idx files, gzipped or not, in ``root/mnist/`` (``root/fashion_mnist/``) or in
  torchvision's ``root/MNIST/raw/`` (``root/FashionMNIST/raw/``).
- ImageFolder: ``root/<split>/<class>/<image>``; classes sorted by name.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from robustlab.data.dataset import DataError, ImageSet
from robustlab.data.decoded import load_tree

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
MNIST_URL = "https://yann.lecun.com/exdb/mnist/ (or any mirror)"


def _require(path: Path, what: str, how: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: not found; expected {what}; get it from {how} "
                        "(the data root is data.root, or $ROBUSTLAB_DATA)")
    return path


class _SafeUnpickler(pickle.Unpickler):
    """Only builtin containers and numpy arrays: CIFAR batches need nothing else."""
    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("builtins", "bytes"),
    }

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _load_pickle(path: Path, what: str) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _SafeUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # corrupt, truncated, or not a CIFAR batch
        raise DataError(f"{path}: unreadable as {what} ({type(exc).__name__}: {exc}); re-download from {CIFAR_URL}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in {what}, found {type(obj).__name__}; re-download from {CIFAR_URL}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path, what)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: {what} must hold 'data' and '{label_key}', found {sorted(d)}; re-download from {CIFAR_URL}")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: {what} 'data' must be [N, 3072] with N labels, found {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10(root: str | Path) -> tuple[ImageSet, ImageSet]:
    base = Path(root) / "cifar-10-batches-py"
    what = "a CIFAR-10 python batch (cifar-10-python.tar.gz extracted under the data root)"
    how = f"`robustlab data download cifar10` (or {CIFAR_URL})"
    parts = [_cifar_batch(_require(base / f"data_batch_{i}", what, how), "labels", what) for i in range(1, 6)]
    test = _cifar_batch(_require(base / "test_batch", what, how), "labels", what)
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return (ImageSet(torch.from_numpy(train_x), torch.from_numpy(train_y)),
            ImageSet(torch.from_numpy(test[0]), torch.from_numpy(test[1])))


def read_cifar100(root: str | Path) -> tuple[ImageSet, ImageSet]:
    base = Path(root) / "cifar-100-python"
    what = "a CIFAR-100 python file (cifar-100-python.tar.gz extracted under the data root)"
    out = []
    for split in ("train", "test"):
        x, y = _cifar_batch(_require(base / split, what, f"`robustlab data download cifar100` (or {CIFAR_URL})"),
                            "fine_labels", what)
        out.append(ImageSet(torch.from_numpy(x), torch.from_numpy(y)))
    return out[0], out[1]


def read_svhn(root: str | Path) -> tuple[ImageSet, ImageSet]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError("SVHN needs scipy to read .mat files: pip install 'robustlab[formats]'") from None
    out = []
    base = _layout([Path(root) / "svhn", Path(root)], "train_32x32.mat")
    for split in ("train", "test"):
        path = _require(base / f"{split}_32x32.mat", f"SVHN {split}_32x32.mat (cropped digits) in {Path(root) / 'svhn'} "
                        "or at the data root (torchvision's layout)", f"`robustlab data download svhn` (or {SVHN_URL})")
        try:
            mat = loadmat(str(path))
        except Exception as exc:
            raise DataError(f"{path}: unreadable as a MATLAB file ({type(exc).__name__}); re-download from {SVHN_URL}") from None
        if "X" not in mat or "y" not in mat or mat["X"].ndim != 4 or mat["X"].shape[:3] != (32, 32, 3):
            raise DataError(f"{path}: expected X [32, 32, 3, N] and y [N, 1]; re-download from {SVHN_URL}")
        x = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)).astype(np.uint8)
        y = mat["y"].reshape(-1).astype(np.int64)
        y[y == 10] = 0  # SVHN writes digit 0 as label 10
        if len(y) != len(x):
            raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
        out.append(ImageSet(torch.from_numpy(x), torch.from_numpy(y)))
    return out[0], out[1]


def _open_maybe_gz(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except Exception:
            raise DataError(f"{path}: corrupt gzip stream; re-download from {MNIST_URL}") from None
    return raw


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST format): magic 0x00 0x00 <dtype 0x08=uint8> <ndim>, big-endian dims, data."""
    raw = _open_maybe_gz(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes (bad magic); re-download from {MNIST_URL}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    n = int(np.prod(dims)) if dims else 0
    if len(raw) != header + n:
        raise DataError(f"{path}: idx header says {dims} ({n} bytes) but the file holds {len(raw) - header}; re-download from {MNIST_URL}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(base: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (base / name).is_file():
            return base / name
    command = "fashion_mnist" if "fashion" in str(base).lower() else "mnist"
    raise DataError(f"{base / stem}: not found (nor .gz); expected the MNIST idx file (torchvision's <root>/MNIST/raw/ "
                    f"layout is read too); get it with `robustlab data download {command}` (or from {MNIST_URL})")


TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _layout(candidates: list[Path], marker: str) -> Path:
    """The first candidate folder holding ``marker`` (or ``marker``.gz); the first one if none does (its error
    then names the expected file)."""
    for base in candidates:
        if (base / marker).is_file() or (base / (marker + ".gz")).is_file():
            return base
    return candidates[0]


def read_mnist(root: str | Path, folder: str = "mnist") -> tuple[ImageSet, ImageSet]:
    candidates = [Path(root) / folder]
    if folder in TORCHVISION_FOLDERS:
        candidates.append(Path(root) / TORCHVISION_FOLDERS[folder] / "raw")
    base = _layout(candidates, "train-images-idx3-ubyte")
    out = []
    for prefix in ("train", "t10k"):
        images = read_idx(_find_idx(base, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(base, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{base}: {prefix} images {images.shape} and labels {labels.shape} do not match")
        out.append(ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))))
    return out[0], out[1]


def read_image_folder(root: str | Path, split: str, classes: list[str] | None = None,
                      size: int | None = None, name: str = "imagefolder", strict_rgb: bool = False,
                      log=lambda s: None) -> tuple[ImageSet, list[str]]:
    """``root/split/<class>/<image>`` into one uint8 tensor (RGB; resized to ``size`` if given), decoded once and
    cached, in the tree's fixed order (robustlab.data.decoded)."""
    base = Path(root) / split
    if not base.is_dir():
        raise DataError(f"{base}: not found; expected an ImageFolder tree {base}/<class>/<image>")
    if classes is None:
        classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{base}: no class folders; expected {base}/<class>/<image>")
    x, y = load_tree(base, classes, f"{name}-{split}", size, strict_rgb, log)
    return ImageSet(x, y), classes


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_JPEG_FOLDER = "cifar10-jpeg"


def cifar10_jpeg_tree(root: str | Path) -> Path:
    """The tree: ``root`` itself when it holds train/ and test/, else ``root/cifar10-jpeg``."""
    root = Path(root)
    for base in (root, root / CIFAR10_JPEG_FOLDER):
        if (base / "train").is_dir() and (base / "test").is_dir():
            return base
    raise DataError(f"{root / CIFAR10_JPEG_FOLDER}: not found; cifar10_jpeg reads a JPEG copy of CIFAR-10 laid out as "
                    "cifar10-jpeg/{train,test}/<class>/<image> (data.root or $ROBUSTLAB_DATA names the folder holding "
                    "it); for the original files use data.name cifar10 and `robustlab data download cifar10`")


def read_cifar10_jpeg(root: str | Path, log=lambda s: None) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 as one JPEG file per image (name it "CIFAR-10 (JPEG copy)" in every figure: JPEG is lossy, about
    6/255 mean absolute difference from the original). The class folders must be CIFAR-10's ten classes, which give
    the labels in CIFAR-10's order; every image must be a 32x32 RGB image."""
    base = cifar10_jpeg_tree(root)
    out = []
    for split in ("train", "test"):
        found = sorted(p.name for p in (base / split).iterdir() if p.is_dir())
        missing = [c for c in CIFAR10_CLASSES if c not in found]
        extra = [c for c in found if c not in CIFAR10_CLASSES]
        if missing or extra:
            what = (f"missing class folder(s) {', '.join(missing)}" if missing else "") + \
                   ("; " if missing and extra else "") + (f"unexpected folder(s) {', '.join(extra)}" if extra else "")
            raise DataError(f"{base / split}: {what}; expected CIFAR-10's classes {', '.join(CIFAR10_CLASSES)}")
        images, _ = read_image_folder(base, split, CIFAR10_CLASSES, 32, "cifar10_jpeg", True, log)
        out.append(images)
    return out[0], out[1]
