"""Image trees decoded once: an ImageFolder tree (``root/<split>/<class>/<image>``) is decoded in parallel into
uint8 arrays and kept in a cache folder keyed by the files it was made from (relative path, size and modification
time of every image). A later load checks the key and a CRC-32 of each array and reads the arrays back (well under a
second for 60,000 32x32 images); a stale cache (other files) is never found under the new key, and a damaged one
(a truncated or altered array, a torn index) is rebuilt, never trusted.

The order of the images is fixed once per tree: a seeded permutation (:data:`ORDER_SEED`) of the files sorted by
class and name, recorded in the cache's ``files.txt``. A tree read class by class would otherwise put 1,000
airplanes first, so "the first N test points" of the monitor and of ``robustlab eval`` would be one class; with the
fixed order they are a uniform sample, the same for every run and every evaluation.

Cache folder: ``$ROBUSTLAB_CACHE`` or ``~/.cache/robustlab/decoded`` (data folders may be read-only).
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from robustlab.core.errors import DataError
from robustlab.core.io import write_bytes, write_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}
ORDER_SEED = 0           # the fixed order of a tree's images (a property of the data set, not of a run)
CACHE_FORMAT = 1


def cache_root() -> Path:
    return Path(os.environ.get("ROBUSTLAB_CACHE") or Path.home() / ".cache" / "robustlab" / "decoded")


def list_tree(base: Path, classes: list[str]) -> list[tuple[str, int, int, int]]:
    """(``class/file`` relative to base, label, size, modification time in ns) for every image of
    ``base/<class>/``, classes in the given order, files sorted by name (os.scandir: 60,000 files in a fraction of
    a second)."""
    out = []
    for label, cls in enumerate(classes):
        folder = base / cls
        if not folder.is_dir():
            raise DataError(f"{folder}: missing class folder (expected one folder per class: {', '.join(classes)})")
        with os.scandir(folder) as entries:
            found = sorted((e.name, e.stat()) for e in entries
                           if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file())
        out += [(f"{cls}/{name}", label, st.st_size, st.st_mtime_ns) for name, st in found]
    if not out:
        raise DataError(f"{base}: no images with suffix {sorted(IMAGE_SUFFIXES)}")
    return out


def tree_key(files: list[tuple[str, int, int, int]], extra: str = "") -> str:
    """A digest of what the decoded arrays depend on: each file's path, label, size and modification time."""
    text = f"{CACHE_FORMAT}\n{extra}\n" + "".join(f"{rel}\t{label}\t{size}\t{mtime}\n" for rel, label, size, mtime in files)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _decode(job: tuple[list[str], int | None, bool]) -> np.ndarray:
    """Decode a list of files to [n, H, W, 3] uint8 (a worker process)."""
    from PIL import Image
    paths, size, strict_rgb = job
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as im:
                if strict_rgb and im.mode != "RGB":
                    raise DataError(f"{path}: a {im.mode} image, not RGB (this data set's images are RGB)")
                im = im.convert("RGB")
                if size is not None and im.size != (size, size):
                    if strict_rgb:
                        raise DataError(f"{path}: {im.size[0]}x{im.size[1]} pixels, expected {size}x{size}")
                    im = im.resize((size, size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
        if arrays and arr.shape != arrays[0].shape:
            raise DataError(f"{path}: size {arr.shape[:2]} differs from {arrays[0].shape[:2]}; set an image size to resize")
        arrays.append(arr)
    return np.stack(arrays)


def decode_files(paths: list[Path], size: int | None, strict_rgb: bool, workers: int | None = None) -> np.ndarray:
    """[N, 3, H, W] uint8, decoded in ``workers`` processes (default: one per core)."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("reading image files needs pillow: pip install 'robustlab[formats]'") from None
    workers = workers or os.cpu_count() or 1
    chunk = max(1, -(-len(paths) // (workers * 8)))
    jobs = [([str(p) for p in paths[i:i + chunk]], size, strict_rgb) for i in range(0, len(paths), chunk)]
    if workers == 1 or len(jobs) == 1:
        parts = [_decode(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_decode, jobs))
    shapes = {p.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise DataError(f"images of different sizes {sorted(shapes)}; set an image size to resize")
    return np.ascontiguousarray(np.concatenate(parts).transpose(0, 3, 1, 2))


def fixed_order(n: int) -> torch.Tensor:
    """The fixed permutation of a tree's n images (seeded by :data:`ORDER_SEED`)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(ORDER_SEED))


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


def _read_cache(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (x, y), or None when absent or damaged in any way."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        out = []
        for name in ("x", "y"):
            arr = np.load(folder / f"{name}.npy", allow_pickle=False)
            if list(arr.shape) != meta[name]["shape"] or _crc(arr) != meta[name]["crc32"]:
                return None
            out.append(arr)
        return out[0], out[1]
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


def _npy_bytes(a: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def load_tree(base: Path, classes: list[str], name: str, size: int | None = None, strict_rgb: bool = False,
              log: Callable[[str], None] = lambda s: None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of ``base/<class>/*`` as (x [N, 3, H, W] uint8, y [N] int64) in the tree's fixed order, from the
    cache when it holds these files, else decoded (in parallel) and cached (each file written atomically; the index
    ``meta.json`` last)."""
    files = list_tree(base, classes)
    key = tree_key(files, f"{size}|{strict_rgb}|{ORDER_SEED}")
    folder = cache_root() / f"{name}-{key}"
    cached = _read_cache(folder) if (folder / "meta.json").is_file() else None
    if cached is None:
        if (folder / "meta.json").is_file():
            log(f"{folder}: damaged cache; decoding {base} again")
        else:
            log(f"decoding {len(files)} images of {base} (once; cached in {folder})")
        ordered = [files[i] for i in fixed_order(len(files)).tolist()]
        x = decode_files([base / rel for rel, *_ in ordered], size, strict_rgb)
        y = np.array([label for _, label, *_ in ordered], dtype=np.int64)
        try:
            for arr_name, arr in (("x", x), ("y", y)):
                write_bytes(folder / f"{arr_name}.npy", _npy_bytes(arr))
            write_text(folder / "files.txt", "".join(f"{rel}\t{label}\n" for rel, label, *_ in ordered))
            write_text(folder / "meta.json", json.dumps({
                "format": CACHE_FORMAT, "source": str(base.resolve()), "key": key, "order_seed": ORDER_SEED,
                "x": {"shape": list(x.shape), "crc32": _crc(x)}, "y": {"shape": list(y.shape), "crc32": _crc(y)}}) + "\n")
        except OSError as exc:          # a read-only home: the data is still right, only not kept
            log(f"warning: could not write the decoded cache to {folder} ({exc.strerror}); set $ROBUSTLAB_CACHE")
        cached = (x, y)
    return torch.from_numpy(cached[0]), torch.from_numpy(cached[1])
