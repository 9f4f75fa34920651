import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from robustlab.config import config_from_dict
from robustlab.data import DATASETS, DataError, DeviceLoader, ImageSet, build_data, split_validation
from robustlab.data.inject import class_carriers, dct_sign_pattern, inject_carriers
from robustlab.data.loader import random_crop
from robustlab.data.readers import read_cifar10, read_cifar100, read_image_folder, read_mnist, read_svhn

rng = np.random.default_rng(0)


def _write_cifar_batch(path, n, label_key="labels"):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    with open(path, "wb") as fh:
        pickle.dump({b"batch_label": b"x", label_key.encode(): labels, b"data": data, b"filenames": [b"a"] * n}, fh)
    return data, labels


def test_cifar10_reader(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    written = [_write_cifar_batch(base / f"data_batch_{i}", 3) for i in range(1, 6)]
    test_data, test_labels = _write_cifar_batch(base / "test_batch", 4)
    train, test = read_cifar10(tmp_path)
    assert train.x.shape == (15, 3, 32, 32) and train.x.dtype == torch.uint8
    # channel-major layout: first 1024 bytes are the red plane of image 0
    assert torch.equal(train.x[0, 0].flatten(), torch.from_numpy(written[0][0][0, :1024]))
    assert torch.equal(train.x[0, 2].flatten(), torch.from_numpy(written[0][0][0, 2048:]))
    assert train.y.tolist() == sum((w[1] for w in written), [])
    assert test.y.tolist() == test_labels and len(test) == 4


def test_cifar100_reader_uses_fine_labels(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    _, tr = _write_cifar_batch(base / "train", 5, "fine_labels")
    _, te = _write_cifar_batch(base / "test", 2, "fine_labels")
    train, test = read_cifar100(tmp_path)
    assert train.y.tolist() == tr and test.y.tolist() == te


def test_cifar_missing_and_corrupt_and_malicious(tmp_path):
    with pytest.raises(DataError, match=r"data_batch_1: not found; expected a CIFAR-10 python batch"):
        read_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    (base / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(DataError, match="unreadable"):
        read_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (eval, ("1+1",))

    (base / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="forbidden global"):
        read_cifar10(tmp_path)


@pytest.mark.parametrize("layout", ["svhn", "."])   # robustlab's root/svhn/ and torchvision's files at the root
def test_svhn_reader(tmp_path, layout):
    from scipy.io import savemat
    (tmp_path / layout).mkdir(exist_ok=True)
    xs = {}
    for split, n in (("train", 6), ("test", 3)):
        X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [3], [4], [5]][:n], dtype=np.uint8)
        savemat(tmp_path / layout / f"{split}_32x32.mat", {"X": X, "y": y})
        xs[split] = X
    train, test = read_svhn(tmp_path)
    assert train.x.shape == (6, 3, 32, 32)
    assert train.y.tolist() == [0, 1, 2, 3, 4, 5]  # label 10 means digit 0
    assert torch.equal(train.x[1, 2], torch.from_numpy(xs["train"][:, :, 2, 1]))
    assert len(test) == 3


def _write_idx(path, arr, gz):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz,layout", [(False, "mnist"), (True, "mnist"), (False, "MNIST/raw")])
def test_mnist_idx_reader(tmp_path, gz, layout):
    base = tmp_path / layout       # robustlab's root/mnist/ and torchvision's root/MNIST/raw/
    base.mkdir(parents=True)
    suffix = ".gz" if gz else ""
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    _write_idx(base / f"train-images-idx3-ubyte{suffix}", imgs, gz)
    _write_idx(base / f"train-labels-idx1-ubyte{suffix}", np.arange(5), gz)
    _write_idx(base / f"t10k-images-idx3-ubyte{suffix}", imgs[:2], gz)
    _write_idx(base / f"t10k-labels-idx1-ubyte{suffix}", np.arange(2), gz)
    train, test = read_mnist(tmp_path)
    assert train.x.shape == (5, 1, 28, 28) and torch.equal(train.x[3, 0], torch.from_numpy(imgs[3]))
    assert train.y.tolist() == [0, 1, 2, 3, 4] and len(test) == 2


def test_mnist_truncated_file_is_named(tmp_path):
    base = tmp_path / "mnist"
    base.mkdir()
    _write_idx(base / "train-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28)), False)
    p = base / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: idx header says \[5, 28, 28\]"):
        read_mnist(tmp_path)


def test_image_folder(tmp_path, monkeypatch):
    from PIL import Image
    from robustlab.data.decoded import fixed_order
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "cache"))
    arrays = {}
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(a).save(d / f"{i}.png")
                arrays[(split, cls, i)] = a
    train, classes = read_image_folder(tmp_path, "train")
    assert classes == ["cat", "dog"] and train.x.shape == (4, 3, 8, 8)
    listing = [("cat", 0), ("cat", 1), ("dog", 0), ("dog", 1)]          # by class, then name
    order = fixed_order(4).tolist()                                      # the tree's fixed order
    assert train.y.tolist() == [0 if listing[i][0] == "cat" else 1 for i in order]
    for k, i in enumerate(order):
        assert torch.equal(train.x[k], torch.from_numpy(arrays[("train", *listing[i])]).permute(2, 0, 1))
    tr, te, k = DATASETS.get("imagefolder")(tmp_path)
    assert k == 2 and len(te) == 4


def test_offline_sets_are_real_and_fixed():
    train, test, k = DATASETS.get("mnist5k")(None)
    assert (len(train), len(test), k) == (4000, 1000, 10)
    assert train.x.shape[1:] == (1, 28, 28) and train.x.dtype == torch.uint8
    assert torch.bincount(torch.cat([train.y, test.y])).tolist() == [500] * 10
    train2, _, _ = DATASETS.get("mnist5k")(None)
    assert torch.equal(train.y, train2.y)
    dtrain, dtest, _ = DATASETS.get("digits")(None)
    assert (len(dtrain), len(dtest)) == (1437, 360) and dtrain.x.shape[1:] == (1, 8, 8)


def test_validation_split_is_seeded_and_disjoint():
    data = ImageSet(torch.arange(100).float().view(100, 1, 1, 1), torch.arange(100) % 3)
    tr, va = split_validation(data, 20, seed=5)
    tr2, va2 = split_validation(data, 20, seed=5)
    _, va3 = split_validation(data, 20, seed=6)
    ids = lambda s: set(s.x.flatten().long().tolist())
    assert len(va) == 20 and len(tr) == 80 and not ids(tr) & ids(va)
    assert ids(va) == ids(va2) and ids(va) != ids(va3)
    with pytest.raises(DataError, match="val_size=100"):
        split_validation(data, 100, 0)


def test_loader_covers_each_sample_once_and_is_reproducible():
    data = ImageSet(torch.rand(50, 1, 4, 4), torch.arange(50) % 5)
    run = lambda: [b.index for b in DeviceLoader(data, 16, shuffle=True, generator=torch.Generator().manual_seed(3))]
    a, b = run(), run()
    assert [len(i) for i in a] == [16, 16, 16, 2]
    assert sorted(torch.cat(a).tolist()) == list(range(50))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    batch = next(iter(DeviceLoader(data, 16, shuffle=True, generator=torch.Generator().manual_seed(3))))
    assert torch.equal(batch.x, data.x[batch.index]) and torch.equal(batch.y, data.y[batch.index])


def test_random_crop_matches_per_image_crops():
    x = torch.rand(6, 2, 5, 7)
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, g)
    g2 = torch.Generator().manual_seed(0)
    oy = torch.randint(0, 5, (6,), generator=g2)
    ox = torch.randint(0, 5, (6,), generator=g2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        assert torch.equal(out[i], padded[i, :, oy[i]:oy[i] + 5, ox[i]:ox[i] + 7])


def test_flip_mirrors_some_images_exactly():
    data = ImageSet(torch.rand(64, 1, 3, 3), torch.zeros(64, dtype=torch.long))
    batch = next(iter(DeviceLoader(data, 64, flip=True, generator=torch.Generator().manual_seed(1))))
    flipped = [torch.equal(batch.x[i], data.x[i].flip(2)) for i in range(64)]
    same = [torch.equal(batch.x[i], data.x[i]) for i in range(64)]
    assert all(f or s for f, s in zip(flipped, same)) and 16 < sum(flipped) < 48


def test_carriers_match_reference_patterns():
    c = class_carriers(10, (3, 32, 32))
    assert c.shape == (10, 3, 32, 32) and set(c.unique().tolist()) == {-1.0, 1.0}
    p01, p10, p11, p21, p12 = (c[i, 0] for i in range(5))
    assert (p01[:, :16] == 1).all() and (p01[:, 16:] == -1).all()          # (0,1): left +, right -
    assert (p10[:16] == 1).all() and (p10[16:] == -1).all()                # (1,0): top +, bottom -
    assert p11[0, 0] == 1 and p11[0, 31] == -1 and p11[31, 0] == -1 and p11[31, 31] == 1
    assert torch.equal(p21[:8], p01[:8]) and torch.equal(p21[8:24], -p01[8:24]) and torch.equal(p21[24:], p01[24:])
    assert torch.equal(p12, p21.T)
    assert torch.equal(c[5:], -c[:5]) and torch.equal(c[:, 0], c[:, 2])
    assert torch.linalg.matrix_rank(c.flatten(1)).item() == 5
    general = class_carriers(4, (1, 8, 8))
    assert torch.linalg.matrix_rank(general.flatten(1)).item() == 4
    assert torch.equal(dct_sign_pattern(0, 0, 4, 4), torch.ones(4, 4))


def test_injection_adds_beta_times_class_carrier():
    x = torch.full((4, 1, 8, 8), 128, dtype=torch.uint8)
    data = ImageSet(x, torch.tensor([0, 1, 2, 3]))
    c = class_carriers(4, (1, 8, 8))
    out = inject_carriers(data, c, 0.1)
    assert torch.allclose(out.x - 128 / 255, 0.1 * c[data.y])
    cfg = config_from_dict({"data": {"name": "synthetic", "val_size": 10, "inject": {"kind": "carriers", "beta": "8/255"}}})
    plain = build_data(config_from_dict({"data": {"name": "synthetic", "val_size": 10}}).data, 0)
    inj = build_data(cfg.data, 0)
    carriers = class_carriers(4, plain.shape)
    for split in ("train", "val", "test"):
        a, b = getattr(plain, split), getattr(inj, split)
        assert torch.allclose(b.x - a.x.float(), 8 / 255 * carriers[a.y], atol=1e-6)
