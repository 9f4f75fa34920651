"""Components as plug-ins: everything below is registered from this file alone, named in a config through
``plugins: [test_components]``, trained, checkpointed, killed mid-epoch and resumed exactly.

- ``test_logit_penalty``: a regulariser (mean squared logit at random points of the eps-ball);
- ``test_aux_head``: a method that owns a trainable module (a head on the logits) and counts epochs in a hook;
- ``test_twopass``: a minimiser (optimizer component) that calls the closure twice per step (SAM's shape), over any
  base optimiser;
- ``test_weight_norm``: a diagnostic with state (how often it measured);
- ``test_bn_net``: a model with BatchNorm, to check that running statistics see each batch once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from robustlab.core.io import load_torch, read_jsonl
from robustlab.core.schema import spec
from robustlab.diagnostics import DIAGNOSTICS, Diagnostic, DiagnosticConfig
from robustlab.methods import METHODS, REGULARIZERS, Method, MethodConfig, Regularizer
from robustlab.methods.regularizers import RandomPointsConfig
from robustlab.models import MODELS
from robustlab.optim import MINIMIZERS, Minimizer, MinimizerConfig

from helpers import train_killed_at

TESTS = Path(__file__).resolve().parent


# ---- the plug-ins ----------------------------------------------------------------------------------------
@REGULARIZERS.register("test_logit_penalty", RandomPointsConfig)
class LogitPenalty(Regularizer):
    """mean_i ||f(x_i + u_i)||^2 / K, u uniform in the eps-ball."""

    def term(self, model, batch, ctx):
        logits = model(self.random_point(batch.x, float(ctx.get("eps", 0.0)))).float()
        value = logits.pow(2).mean()
        return value, {"logit_sq": value.detach()}


@dataclass
class AuxHeadConfig(MethodConfig):
    aux_weight: float = spec(0.5, lo=0.0, doc="weight of the auxiliary head's loss")


@METHODS.register("test_aux_head", AuxHeadConfig)
class AuxHead(Method):
    """CE(f(x), y) + w CE(h(f(x)), y) with h a trainable Linear(K, K) the method owns; counts epochs."""

    def __init__(self, cfg, bctx):
        super().__init__(cfg, bctx)
        self.head = nn.Linear(bctx.num_classes, bctx.num_classes)
        self.epochs_started = 0

    def modules(self):
        return {"head": self.head}

    def objective(self, model, batch, ctx, logits=None):
        out = super().objective(model, batch, ctx, logits)
        aux = F.cross_entropy(self.head(out.logits.float()), batch.y)
        out.loss = out.loss + self.cfg.aux_weight * aux
        out.metrics["aux_loss"] = aux.detach()
        out.metrics["epochs_started"] = torch.tensor(float(self.epochs_started))
        return out

    def on_epoch_start(self, ectx):
        super().on_epoch_start(ectx)
        self.epochs_started += 1

    def state_dict(self):
        return {**super().state_dict(), "epochs_started": self.epochs_started}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.epochs_started = state["epochs_started"]


@dataclass
class TwoPassConfig(MinimizerConfig):
    rho: float = spec(0.05, lo=0.0, doc="ascent radius")


@MINIMIZERS.register("test_twopass", TwoPassConfig)
class TwoPass(Minimizer):
    """SAM's shape: ascend by rho g/||g|| (pass 0), take the gradient there (pass 1), restore, base step."""

    def __init__(self, cfg, base, bctx=None):
        super().__init__(cfg, base, bctx)
        self.passes = 0

    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        params = [p for p in self.params() if p.grad is not None]
        norm = torch.norm(torch.stack([p.grad.norm() for p in params]))
        shifts = [self.cfg.rho * p.grad / (norm + 1e-12) for p in params]
        with torch.no_grad():
            for p, e in zip(params, shifts):
                p.add_(e)
        with torch.enable_grad():
            closure()
        with torch.no_grad():
            for p, e in zip(params, shifts):
                p.sub_(e)
        self.passes += 2
        self.base_step()
        return loss

    def extra_state(self):
        return {"passes": self.passes}

    def load_extra_state(self, state):
        self.passes = state["passes"]


@DIAGNOSTICS.register("test_weight_norm", DiagnosticConfig)
class WeightNorm(Diagnostic):
    def __init__(self, cfg, bctx):
        super().__init__(cfg, bctx)
        self.calls = 0

    def measure(self, model, epoch):
        self.calls += 1
        total = sum(float(p.detach().pow(2).sum()) for p in model.parameters())
        return {"diag_weight_norm": total ** 0.5, "diag_calls": float(self.calls)}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


class BNNet(nn.Module):
    def __init__(self, c, k, side):
        super().__init__()
        self.conv = nn.Conv2d(c, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * side * side, k)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


MODELS.register("test_bn_net")(lambda cfg, c, k, s: BNNet(c, k, s))


# ---- the tests -------------------------------------------------------------------------------------------
def plugin_config(epochs=3):
    return {"seed": 0, "plugins": ["test_components"],
            "data": {"name": "mnist5k", "val_size": 200, "batch_size": 100},
            "model": {"name": "test_bn_net"},
            "method": {"name": "test_aux_head", "eps": 0.1, "aux_weight": 0.5,
                       "regularizers": [{"name": "test_logit_penalty", "weight": 0.01}]},
            "optim": {"name": "sgd", "lr": 0.05, "schedule": "cyclic", "minimizer": {"name": "test_twopass", "rho": 0.05}},
            "train": {"epochs": epochs, "progress": "none", "threads": 1},
            "monitor": {"eval_points": 200, "val_points": 100, "attack_steps": 2,
                        "diagnostics": [{"name": "test_weight_norm"}, {"name": "linearity", "points": 64, "every": 2}]},
            "final_eval": {"points": 0}}


def comparable(rows):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


def test_plugins_train_with_their_own_configs(tmp_path):
    from robustlab.config import config_from_dict
    from robustlab.engine import train
    cfg = config_from_dict(plugin_config(epochs=2))
    assert cfg.optim.minimizer.rho == 0.05 and cfg.method.aux_weight == 0.5 and cfg.method.regularizers[0].clip_box
    res = train(cfg, tmp_path / "run", log=lambda s: None)
    assert res["status"] == "finished"
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epochs_started"] for r in rows] == [1.0, 2.0]          # the epoch hook ran before each epoch
    assert [r["diag_calls"] for r in rows] == [1.0, 2.0]
    assert "diag_elle_error" not in rows[0] and "diag_elle_error" in rows[1]   # linearity every 2 epochs
    assert rows[0]["logit_sq"] > 0 and rows[0]["test_logit_penalty_lambda"] == 0.01
    last = load_torch(tmp_path / "run" / "checkpoints" / "last.pt")
    head = last["components"]["method"]["modules"]["head"]
    assert set(head) == {"weight", "bias"}
    assert last["optimizer"]["own"]["passes"] == 2 * 38 * 2             # 2 passes x 38 steps (3,800 images) x 2 epochs
    assert len(last["optimizer"]["base"]["state"]) == 6 + 2             # model (conv, bn, fc: 6 tensors) + head (2)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["optim"]["schedule"] == {"name": "cyclic", "peak_at": 0.5, "cycle_momentum": False}
    assert saved["method"]["regularizers"][0]["schedule"] == {"name": "constant"}   # resolved, written back


def test_unknown_key_of_a_plugin_names_its_keys():
    from robustlab.config import ConfigError, config_from_dict
    raw = plugin_config()
    raw["optim"]["minimizer"]["rh0"] = 0.1
    with pytest.raises(ConfigError, match=r"optim\.minimizer\.rh0: unknown key; allowed keys here: name, rho$"):
        config_from_dict(raw)
    with pytest.raises(ConfigError, match=r"plugins\[0\]: cannot import 'no_such_module'"):
        config_from_dict({"plugins": ["no_such_module"]})


def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    """SIGKILL inside epoch 2, rerun: metrics, model, method-owned head, base-optimiser state (momentum),
    minimiser state and diagnostic state all equal the uninterrupted run's."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(plugin_config(epochs=3)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "robustlab", "train", str(path), "--out"]
    subprocess.run(cmd + [str(tmp_path / "ref")], check=True, capture_output=True, env=env, timeout=300)
    train_killed_at(path, tmp_path / "cut", epoch=2, step=5, env=env)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    assert len(read_jsonl(metrics)) == 1
    subprocess.run(cmd + [str(tmp_path / "cut")], check=True, capture_output=True, env=env, timeout=300)
    assert comparable(read_jsonl(metrics)) == comparable(read_jsonl(tmp_path / "ref" / "metrics.jsonl"))
    a, b = load_torch(tmp_path / "ref" / "checkpoints" / "last.pt"), load_torch(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    ha, hb = a["components"]["method"]["modules"]["head"], b["components"]["method"]["modules"]["head"]
    assert all(torch.equal(ha[k], hb[k]) for k in ha)
    assert a["optimizer"]["own"] == b["optimizer"]["own"] and a["components"]["diagnostics"] == b["components"]["diagnostics"]
    for i, st in a["optimizer"]["base"]["state"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"]["base"]["state"][i]["momentum_buffer"])
    assert json.loads((tmp_path / "cut" / "results.json").read_text())["status"] == "finished"
