"""``robustlab data download NAME``: the original files of a data set from their official addresses, checked
against their published MD5 checksums, into the layout the readers expect (``data.root`` / ``$ROBUSTLAB_DATA``).

- Resumable: bytes arrive in ``.<file>.part`` beside the target; a rerun asks the server for the rest (HTTP Range)
  and starts over only when the server cannot resume.
- Atomic: a file becomes data only after its checksum matched (rename of the part file); an archive is extracted
  into a temporary folder and renamed into place, so nothing half-written is ever read as data.
- A cut transfer (fewer bytes than announced) or a wrong checksum is a one-line error naming the file; a cut part
  is kept for the resume, a part with a wrong checksum is deleted.
- ``mirror``: fetch every file from ``MIRROR/<file name>`` instead (a local copy; the tests' loopback server).
Checksums are the ones the data sets' pages publish (and torchvision checks).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.progress import Progress

CHUNK = 1 << 16
TIMEOUT_S = 30


@dataclass(frozen=True)
class Source:
    file: str                  # the file name
    urls: tuple[str, ...]      # official address first, then mirrors
    md5: str
    folder: str = ""           # where under the data root the file (or its extraction) goes
    extracts_to: str = ""      # a .tar.gz: the folder it holds


_MNIST = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


def _idx(folder: str, bases: tuple[str, ...], md5s: dict[str, str]) -> list[Source]:
    return [Source(name, tuple(b + name for b in bases), md5, folder) for name, md5 in md5s.items()]


SOURCES: dict[str, list[Source]] = {
    "cifar10": [Source("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                       "c58f30108f718f92721af3b95e74349a", "", "cifar-10-batches-py")],
    "cifar100": [Source("cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                        "eb9058c3a382ffc7106e4002c42a8d85", "", "cifar-100-python")],
    "svhn": [Source("train_32x32.mat", ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
                    "e26dedcc434d2e4c54c9b2d4a06d8373", "svhn"),
             Source("test_32x32.mat", ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
                    "eb5a983be6a315427106f1b164d9cef3", "svhn")],
    "mnist": _idx("mnist", _MNIST, {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                                    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                                    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion_mnist": _idx("fashion_mnist", _FASHION, {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                                      "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                                                      "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                                                      "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
}


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Bar:
    """tqdm on a terminal, else robustlab's progress lines (core.progress: at most one every 10 s)."""

    def __init__(self, name: str, total: int | None, done: int, log: Callable[[str], None]):
        self.tqdm, self.lines = None, None
        try:
            import sys

            from tqdm import tqdm
            if sys.stderr.isatty():
                self.tqdm = tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=name)
        except ImportError:
            pass
        if self.tqdm is None and total:
            self.lines = Progress(name, total, log, unit="bytes")
            self.lines.done = done

    def update(self, n: int) -> None:
        if self.tqdm is not None:
            self.tqdm.update(n)
        elif self.lines is not None:
            self.lines.advance(n)

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()


def _fetch(url: str, part: Path, name: str, log: Callable[[str], None]) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range when part has bytes; from 0 if the server ignores it)."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "robustlab", **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:          # nothing left to send: the part is complete
            return
        raise DataError(f"{name}: {url} answered HTTP {exc.code} ({exc.reason})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{name}: cannot reach {url} ({getattr(exc, 'reason', exc)})") from None
    with response:
        resumed = have and response.status == 206
        if have and not resumed:
            have = 0                          # the server sends the whole file: start over
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        bar = _Bar(name, expected, have, log)
        with open(part, "ab" if resumed else "wb") as fh:
            try:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    bar.update(len(block))
            except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                bar.close()
                raise DataError(f"{name}: transfer cut at {part.stat().st_size if part.exists() else 0} bytes "
                                f"({type(exc).__name__}); run the same command again to resume") from None
        bar.close()
    got = part.stat().st_size
    if expected is not None and got < expected:
        raise DataError(f"{name}: transfer cut at {got} of {expected} bytes; run the same command again to resume")


def _extract(archive: Path, dest_root: Path, folder: str) -> None:
    """A .tar.gz whose members all lie inside ``folder`` (no links, no absolute or parent paths), extracted into a
    temporary folder and renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for m in tar.getmembers():
                    parts = Path(m.name).parts
                    if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()) or parts[0] != folder:
                        raise DataError(f"{archive}: unexpected member {m.name!r} (expected files under {folder}/)")
                tar.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(tmp)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{archive}: not a readable .tar.gz ({type(exc).__name__}); delete it and download again") from None
        os.replace(tmp / folder, dest_root / folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download(name: str, root: str | Path, mirror: str | None = None, log: Callable[[str], None] = print,
             sources: dict[str, list[Source]] | None = None) -> list[Path]:
    """Fetch data set ``name`` into ``root``; returns what is in place. A file already there with the right
    checksum is not fetched again. ``sources``: another table (tests)."""
    table = SOURCES if sources is None else sources
    if name not in table:
        raise ConfigError(f"data download: got {name!r}; allowed: {', '.join(table)}")
    root = Path(root)
    placed = []
    for src in table[name]:
        folder = root / src.folder
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / src.file
        done = folder / src.extracts_to if src.extracts_to else target
        if src.extracts_to and done.is_dir():
            log(f"{done}: already in place")
            placed.append(done)
            continue
        if not target.is_file() or md5_of(target) != src.md5:
            part = folder / f".{src.file}.part"
            urls = (f"{mirror.rstrip('/')}/{src.file}",) if mirror else src.urls
            errors = []
            for url in urls:
                try:
                    log(f"{src.file}: fetching {url}")
                    _fetch(url, part, src.file, log)
                    break
                except DataError as exc:
                    errors.append(str(exc))
                    if "transfer cut" in str(exc):
                        raise
            else:
                raise DataError(errors[-1] if len(errors) == 1 else f"{src.file}: no address answered ({'; '.join(errors)})")
            digest = md5_of(part)
            if digest != src.md5:
                part.unlink()
                raise DataError(f"{src.file}: checksum mismatch (md5 {digest}, published {src.md5}); the download was "
                                "deleted; run the command again")
            os.replace(part, target)
        if src.extracts_to:
            log(f"{src.file}: extracting {src.extracts_to}/")
            _extract(target, folder, src.extracts_to)
        log(f"{done}: in place")
        placed.append(done)
    return placed
