import pytest
import torch

from helpers import trained_synthetic_model
from robustlab.config import config_from_dict
from robustlab.diagnostics import co_fires
from robustlab.diagnostics.linearity import linearity_diagnostics
from robustlab.engine import train
from robustlab.engine.hooks import co_action as co_action_module
from robustlab.core.io import load_torch, read_jsonl


def test_live_co_rule():
    assert not co_fires([0.1])
    assert not co_fires([0.1, 0.15, 0.02])            # never robust enough to collapse
    assert co_fires([0.1, 0.5, 0.6, 0.1])              # 0.1 < 0.25 * 0.6
    assert not co_fires([0.1, 0.5, 0.6, 0.2])
    assert co_fires([0.1, 0.5, None, 0.05])
    # a model collapse (clean accuracy gone too) is not CO; CO keeps >= 0.9 of the clean accuracy at the peak
    assert not co_fires([0.1, 0.5, 0.6, 0.1], [0.9, 0.95, 0.96, 0.12])
    assert co_fires([0.1, 0.5, 0.6, 0.1], [0.9, 0.95, 0.96, 0.87])     # 0.87 >= 0.9 * 0.96 = 0.864
    assert not co_fires([0.1, 0.5, 0.6, 0.1], [0.9, 0.95, 0.96, 0.86])


def test_linearity_diagnostics_values():
    model, x, y = trained_synthetic_model()
    flags = [m.training for m in model.modules()]
    d = linearity_diagnostics(model, x[:64], y[:64], 0.1)
    assert [m.training for m in model.modules()] == flags and all(p.grad is None for p in model.parameters())
    assert d["diag_elle_error"] >= 0 and -1 <= d["diag_gradalign_cos"] <= 1
    assert d["diag_fgsm_pgd_gap"] == pytest.approx(d["diag_fgsm_acc"] - d["diag_pgd_acc"])
    assert d["diag_pgd_acc"] <= d["diag_fgsm_acc"] + 0.05
    assert d == linearity_diagnostics(model, x[:64], y[:64], 0.1)          # fixed randomness
    small = linearity_diagnostics(model, x[:64], y[:64], 0.001)
    assert small["diag_gradalign_cos"] > d["diag_gradalign_cos"] and small["diag_elle_error"] < d["diag_elle_error"]


@pytest.mark.parametrize("action", ["stop", "rollback"])
def test_co_action_stops_and_rolls_back(tmp_path, tiny_cfg, monkeypatch, action):
    calls = {"n": 0}

    def fires_at_epoch_3(curve, *a, **k):
        calls["n"] += 1
        return calls["n"] == 3

    monkeypatch.setattr(co_action_module, "co_fires", fires_at_epoch_3)
    tiny_cfg["train"]["epochs"] = 6
    tiny_cfg["monitor"]["co_action"] = action
    res = train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(rows) == 3 and res["co_epoch"] == 3 and res["status"] == "finished"
    assert "CO detected at epoch 3" in res["message"] and "diag_elle_error" in rows[0]
    last = load_torch(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    best = load_torch(tmp_path / "run" / "checkpoints" / "best.pt")["model"]
    same = all(torch.equal(last[k], best[k]) for k in last)
    assert same == (action == "rollback" or res["best_epoch"] == 3)
