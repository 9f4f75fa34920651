
import pytest
import torch

from robustlab.config import ConfigError, config_from_dict
from robustlab.data import ImageSet, build_data
from robustlab.data.inject import carrier_basis, class_carriers, inject_carriers
from robustlab.data.labels import symmetric_noise
from robustlab.core.io import load_torch
from robustlab.models.normalize import DCTLowPass, dct_matrix


def test_orthogonal_injection_removes_the_span_of_true_rank():
    c = class_carriers(10, (3, 8, 8))
    q = carrier_basis(c)
    assert q.shape == (192, 5) and torch.allclose(q.T @ q, torch.eye(5), atol=1e-5)
    x = torch.rand(20, 3, 8, 8)
    y = torch.arange(20) % 10
    out = inject_carriers(ImageSet(x, y), c, 0.1, orthogonal=True)
    resid = (out.x - 0.1 * c[y]).flatten(1)
    assert (resid @ q).abs().max() < 1e-5                       # no component left in the span
    plain = x.flatten(1)
    assert torch.allclose(resid, plain - (plain @ q) @ q.T, atol=1e-5)   # only the span was removed


def test_dct_lowpass_frequency_response():
    h = w = 8
    lp = DCTLowPass(3, h, w)
    C = dct_matrix(h)
    assert torch.allclose(C @ C.T, torch.eye(h), atol=1e-6)
    for u in range(h):
        for v in range(w):
            basis = torch.outer(C[u], C[v])[None, None]       # one 2-D DCT basis image
            out = lp(basis)
            if u < 3 and v < 3:
                assert torch.allclose(out, basis, atol=1e-5), (u, v)      # passes unchanged
            else:
                assert out.abs().max() < 1e-5, (u, v)                     # removed, on both axes
    lp.apply_filter = False
    x = torch.rand(2, 3, h, w)
    assert torch.equal(lp(x), x)


def test_lowpass_model_shares_the_state_dict():
    from robustlab.models import build_model
    a = build_model(config_from_dict({"model": {"name": "wong_mnist"}}).model, (1, 28, 28), 10, (0.1,), (0.3,))
    b = build_model(config_from_dict({"model": {"name": "wong_mnist", "lowpass": 8}}).model, (1, 28, 28), 10, (0.1,), (0.3,))
    assert a.state_dict().keys() == b.state_dict().keys()


def test_symmetric_noise_rates_and_seed():
    y = torch.arange(10000) % 10
    noisy = symmetric_noise(y, 10, 0.4, seed=3)
    changed = (noisy != y).float().mean().item()
    assert changed == pytest.approx(0.4 * 0.9, abs=0.02)       # redrawn w.p. 0.4, lands elsewhere w.p. 0.9
    assert torch.equal(noisy, symmetric_noise(y, 10, 0.4, seed=3))
    assert not torch.equal(noisy, symmetric_noise(y, 10, 0.4, seed=4))
    rand = symmetric_noise(y, 10, 1.0, seed=0)
    assert (rand != y).float().mean().item() == pytest.approx(0.9, abs=0.02)
    assert torch.bincount(rand).min() > 900


def test_random_labels_run_saves_them(tmp_path, tiny_cfg):
    from robustlab.engine import train
    tiny_cfg["data"]["labels"] = {"noise": 1.0}
    tiny_cfg["train"]["epochs"] = 1
    train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    saved = load_torch(tmp_path / "run" / "labels.pt")
    data = build_data(config_from_dict(tiny_cfg).data, 0)
    assert torch.equal(saved["train_labels"], data.train.y)
    assert (saved["train_labels"] != saved["original_train_labels"]).float().mean() > 0.5
    with pytest.raises(ConfigError, match="data.labels.noise: got 1.5; must be <= 1"):
        config_from_dict({"data": {"labels": {"noise": 1.5}}})
