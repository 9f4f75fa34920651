"""CIFAR-10 as a JPEG tree (decoded once, cached, in a fixed order), balanced subsets, and `robustlab data download`
against a loopback HTTP server serving archives the tests make (good, corrupt, cut mid-transfer, then resumed)."""
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.config import config_from_dict
from robustlab.core.errors import DataError
from robustlab.data import build_data, readers
from robustlab.data import decoded

CLASSES = readers.CIFAR10_CLASSES
ROOT = Path(__file__).resolve().parent.parent


def write_tree(root: Path, train=3, test=2, seed=0) -> dict:
    """A CIFAR-10-shaped JPEG tree: every class folder, 32x32 RGB images; returns the decoded pixels by file."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    pixels = {}
    for split, n in (("train", train), ("test", test)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                path = root / split / cls / f"{i:04d}.jpg"
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, quality=90)
                with Image.open(path) as im:
                    pixels[str(path.relative_to(root / split))] = np.array(im.convert("RGB"))
    return pixels


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def data_cfg(root, **kw):
    return config_from_dict({"data": {"name": "cifar10_jpeg", "root": str(root), "val_size": 0, **kw}}).data


def test_jpeg_tree_decoded_once_in_a_fixed_order(tmp_path, cache, monkeypatch):
    pixels = write_tree(tmp_path / "cifar10-jpeg")
    first = build_data(data_cfg(tmp_path), 0)
    assert first.train.x.shape == (30, 3, 32, 32) and first.test.x.shape == (20, 3, 32, 32)
    (folder,) = [p for p in cache.iterdir() if p.name.startswith("cifar10_jpeg-test")]
    listed = [line.split("\t") for line in (folder / "files.txt").read_text().splitlines()]
    for k, (name, label) in enumerate(listed):          # each image is its file's pixels, with its class's label
        assert torch.equal(first.test.x[k], torch.from_numpy(pixels[name]).permute(2, 0, 1))
        assert int(label) == first.test.y[k] == CLASSES.index(name.split("/")[0])
    assert len(set(first.test.y[:5].tolist())) > 1      # not one class first, as a class-by-class read would be
    sorted_names = sorted(n for n, _ in listed)
    assert [n for n, _ in listed] == [sorted_names[i] for i in decoded.fixed_order(20).tolist()]
    # the second load reads the cache: decoding is not called
    monkeypatch.setattr(decoded, "decode_files", lambda *a, **k: pytest.fail("decoded again"))
    second = build_data(data_cfg(tmp_path), 0)
    assert torch.equal(second.test.x, first.test.x) and torch.equal(second.train.y, first.train.y)


def test_damaged_or_stale_cache_is_rebuilt(tmp_path, cache, monkeypatch):
    write_tree(tmp_path / "cifar10-jpeg")
    ref = build_data(data_cfg(tmp_path), 0)
    calls = []
    real = decoded.decode_files
    monkeypatch.setattr(decoded, "decode_files", lambda *a, **k: calls.append(1) or real(*a, **k))
    (folder,) = [p for p in cache.iterdir() if p.name.startswith("cifar10_jpeg-train")]
    x = folder / "x.npy"
    x.write_bytes(x.read_bytes()[:-100])                 # truncated
    again = build_data(data_cfg(tmp_path), 0)
    assert calls == [1] and torch.equal(again.train.x, ref.train.x)
    raw = bytearray(x.read_bytes())
    raw[-1] ^= 0xFF                                      # one byte altered, same size
    x.write_bytes(bytes(raw))
    assert torch.equal(build_data(data_cfg(tmp_path), 0).train.x, ref.train.x) and calls == [1, 1]
    from PIL import Image                                # a file replaced: another key, decoded anew
    img = tmp_path / "cifar10-jpeg" / "train" / "cat" / "0000.jpg"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(img)
    os.utime(img, ns=(time.time_ns(), time.time_ns() + 10**9))
    fresh = build_data(data_cfg(tmp_path), 0)
    assert calls == [1, 1, 1] and not torch.equal(fresh.train.x, ref.train.x)


def test_bad_trees_are_one_line_errors(tmp_path, cache):
    from PIL import Image
    write_tree(tmp_path / "cifar10-jpeg", train=1, test=1)
    tree = tmp_path / "cifar10-jpeg"
    (tree / "test" / "frog").rename(tmp_path / "frog")
    with pytest.raises(DataError, match=r"test: missing class folder\(s\) frog; expected CIFAR-10's classes"):
        readers.read_cifar10_jpeg(tmp_path)
    (tmp_path / "frog").rename(tree / "test" / "frog")
    bad = tree / "train" / "dog" / "0001.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"dog/0001.jpg: unreadable image"):
        readers.read_cifar10_jpeg(tmp_path)
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(bad)      # greyscale
    with pytest.raises(DataError, match=r"dog/0001.jpg: a L image, not RGB"):
        readers.read_cifar10_jpeg(tmp_path)
    bad.unlink()
    with pytest.raises(DataError, match=r"cifar10_jpeg reads a JPEG copy"):
        readers.read_cifar10_jpeg(tmp_path / "nowhere")


def test_balanced_subset(tmp_path, cache):
    write_tree(tmp_path / "cifar10-jpeg", train=4, test=1)
    data = build_data(data_cfg(tmp_path, train_per_class=2), 3)
    assert torch.bincount(data.train.y).tolist() == [2] * 10
    other = build_data(data_cfg(tmp_path, train_per_class=2), 4)
    assert not torch.equal(data.train.x, other.train.x)               # seeded: another seed, other images
    with pytest.raises(DataError, match="train_per_class=5: class 0 has 4 training images"):
        build_data(data_cfg(tmp_path, train_per_class=5), 0)
    from robustlab.core.errors import ConfigError
    with pytest.raises(ConfigError, match="give train_size or train_per_class, not both"):
        data_cfg(tmp_path, train_per_class=2, train_size=10)


def shared_tree() -> Path | None:
    """The CIFAR-10 JPEG copy: $ROBUSTLAB_DATA's, else ../shared/data beside the checkout."""
    for base in filter(None, (os.environ.get("ROBUSTLAB_DATA"), str(ROOT.parent / "shared" / "data"))):
        if (Path(base) / "cifar10-jpeg" / "test").is_dir():
            return Path(base)
    return None


@pytest.mark.skipif(shared_tree() is None, reason="the CIFAR-10 JPEG copy is not here ($ROBUSTLAB_DATA or "
                    "../shared/data/cifar10-jpeg)")
def test_the_shared_cifar10_jpeg_copy():
    """All 60,000 images, CIFAR-10's class order and counts; a uniform first 200 test points; the cached load fast.
    The decoded cache lives in the user's cache folder, so only the first run on a machine pays the decoding."""
    from robustlab.data import DATASETS
    root = shared_tree()
    DATASETS.get("cifar10_jpeg")(root)                    # decode once (or find the cache)
    t0 = time.perf_counter()
    train, test, classes = DATASETS.get("cifar10_jpeg")(root)
    seconds = time.perf_counter() - t0
    assert classes == 10 and train.x.shape == (50000, 3, 32, 32) and test.x.shape == (10000, 3, 32, 32)
    assert torch.bincount(train.y).tolist() == [5000] * 10 and torch.bincount(test.y).tolist() == [1000] * 10
    assert len(set(test.y[:200].tolist())) == 10 and torch.bincount(test.y[:200], minlength=10).max() < 40
    mean = train.x.float().div(255).mean(dim=(0, 2, 3))  # the copy's README: 0.4913, 0.4821, 0.4465
    assert torch.allclose(mean, torch.tensor([0.4913, 0.4821, 0.4465]), atol=2e-4)
    assert seconds < 5, seconds                           # well under a second on an idle machine


# ---- robustlab data download against a loopback server ----------------------------------------------------------

class Server:
    """Serves ``files`` on 127.0.0.1 with HTTP Range; ``cut[name] = k`` sends only k bytes once, then closes."""

    def __init__(self):
        self.files, self.cut, self.requests = {}, {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                data = outer.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_response(416)
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = outer.cut.pop(name, None)
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def cifar_archive(n=4) -> bytes:
    """A small cifar-10-python.tar.gz in the real layout (python pickles of numpy arrays)."""
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            raw = pickle.dumps({b"labels": rng.integers(0, 10, n).tolist(),
                                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def table_for(data: bytes):
    from robustlab.data.download import Source
    return {"cifar10": [Source("cifar-10-python.tar.gz", ("unused",), hashlib.md5(data).hexdigest(), "",
                               "cifar-10-batches-py")]}


def test_download_good_cut_resumed_and_corrupt(server, tmp_path):
    from robustlab.data.download import download
    data = cifar_archive()
    server.files["cifar-10-python.tar.gz"] = data
    server.cut["cifar-10-python.tar.gz"] = len(data) // 3               # the first transfer is cut
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz: transfer cut at \d+ .*run the same command again"):
        download("cifar10", tmp_path, server.url, log=lambda s: None, sources=table_for(data))
    part = tmp_path / ".cifar-10-python.tar.gz.part"
    assert part.is_file() and not (tmp_path / "cifar-10-batches-py").exists()   # nothing read as data yet
    have = part.stat().st_size
    download("cifar10", tmp_path, server.url, log=lambda s: None, sources=table_for(data))
    assert server.requests[-1] == ("cifar-10-python.tar.gz", f"bytes={have}-")   # resumed, not restarted
    assert not part.exists() and hashlib.md5((tmp_path / "cifar-10-python.tar.gz").read_bytes()).digest() == \
        hashlib.md5(data).digest()
    train, test = readers.read_cifar10(tmp_path)
    assert train.x.shape == (20, 3, 32, 32) and len(test) == 4
    n = len(server.requests)
    download("cifar10", tmp_path, server.url, log=lambda s: None, sources=table_for(data))
    assert len(server.requests) == n                                    # in place: nothing fetched
    other = tmp_path / "other"
    server.files["cifar-10-python.tar.gz"] = data[:-10] + b"0123456789"   # corrupt
    with pytest.raises(DataError, match=r"checksum mismatch \(md5 [0-9a-f]+, published [0-9a-f]+\); the download was deleted"):
        download("cifar10", other, server.url, log=lambda s: None, sources=table_for(data))
    assert list(other.iterdir()) == []


def test_download_command_line(server, tmp_path):
    server.files["train-images-idx3-ubyte.gz"] = b"not MNIST"           # served under the real name: wrong checksum
    proc = subprocess.run([sys.executable, "-m", "robustlab", "data", "download", "mnist", "--root", str(tmp_path),
                           "--mirror", server.url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("robustlab: error: train-images-idx3-ubyte.gz: checksum mismatch"), proc.stderr
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    bad = subprocess.run([sys.executable, "-m", "robustlab", "data", "download", "imagenet"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == ("robustlab: error: data download: got 'imagenet'; allowed: "
                                                          "cifar10, cifar100, svhn, mnist, fashion_mnist")
    (tmp_path / "c.yaml").write_text("data: {name: cifar10}\nmodel: {name: small_cnn}\n")
    missing = subprocess.run([sys.executable, "-m", "robustlab", "train", str(tmp_path / "c.yaml"), "--out",
                              str(tmp_path / "run")], capture_output=True, text=True,
                             env={**os.environ, "ROBUSTLAB_DATA": str(tmp_path / "empty")})
    assert missing.returncode == 2 and "robustlab data download cifar10" in missing.stderr, missing.stderr
