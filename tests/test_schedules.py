
import pytest
import torch

from robustlab.config import config_from_dict
from robustlab.optim import LR_SCHEDULES, Minimizer, build_optimizer, set_hyperparameters

SCHEDULE_KEYS = {"schedule", "peak_at", "cycle_momentum", "milestones", "gamma", "warmup_epochs"}


def opt(**kw):
    """An optimizer config; schedule keys go into its ``schedule`` component."""
    sched = {("name" if k == "schedule" else k): v for k, v in kw.items() if k in SCHEDULE_KEYS}
    rest = {k: v for k, v in kw.items() if k not in SCHEDULE_KEYS}
    return config_from_dict({"optim": {**rest, **({"schedule": sched} if sched else {})}}).optim


def lr_at(c, t, total, per):
    return LR_SCHEDULES.build(c.schedule).lr_at(c.lr, t, total, per)


def momentum_at(c, t, total, per):
    return LR_SCHEDULES.build(c.schedule).momentum_at(c.lr, t, total, per)


def test_cyclic_triangle():
    c = opt(lr=0.2, schedule="cyclic")
    total, per = 1000, 100
    assert lr_at(c, 0, total, per) == 0.0
    assert lr_at(c, 250, total, per) == pytest.approx(0.1)
    assert lr_at(c, 500, total, per) == pytest.approx(0.2)
    assert lr_at(c, 750, total, per) == pytest.approx(0.1)
    assert lr_at(c, 1000, total, per) == pytest.approx(0.0)
    c2 = opt(lr=0.2, schedule="cyclic", peak_at=0.4)
    assert lr_at(c2, 400, total, per) == pytest.approx(0.2)
    assert lr_at(c2, 700, total, per) == pytest.approx(0.1)


def test_multistep_cosine_constant_warmup():
    m = opt(lr=0.1, schedule="multistep", milestones=[100, 150], gamma=0.1)
    per = 10
    assert lr_at(m, 999, 2000, per) == pytest.approx(0.1)
    assert lr_at(m, 1000, 2000, per) == pytest.approx(0.01)
    assert lr_at(m, 1500, 2000, per) == pytest.approx(0.001)
    cos = opt(lr=0.1, schedule="cosine")
    assert lr_at(cos, 0, 100, 10) == pytest.approx(0.1)
    assert lr_at(cos, 50, 100, 10) == pytest.approx(0.05)
    assert lr_at(cos, 100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    w = opt(lr=0.1, schedule="constant", warmup_epochs=2)
    assert lr_at(w, 5, 100, 10) == pytest.approx(0.025)
    assert lr_at(w, 20, 100, 10) == pytest.approx(0.1)


def test_cyclic_momentum_and_param_groups():
    c = opt(lr=0.2, schedule="cyclic", cycle_momentum=True)
    assert momentum_at(c, 0, 100, 10) == pytest.approx(0.9)
    assert momentum_at(c, 50, 100, 10) == pytest.approx(0.8)
    assert momentum_at(opt(lr=0.2), 50, 100, 10) is None
    o = build_optimizer(c, [torch.nn.Parameter(torch.zeros(1))])
    assert set_hyperparameters(o, LR_SCHEDULES.build(c.schedule), c.lr, 25, 100, 10) == pytest.approx(0.1)
    assert o.param_groups[0]["lr"] == pytest.approx(0.1) and o.param_groups[0]["momentum"] == pytest.approx(0.85)
    a = build_optimizer(opt(name="adamw", lr=1e-3, weight_decay=0.01), [torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(a, Minimizer) and isinstance(a.base, torch.optim.AdamW) and a.param_groups[0]["weight_decay"] == 0.01
