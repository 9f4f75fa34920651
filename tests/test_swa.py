"""Stochastic weight averaging (train.swa): the average equals a manual average of the snapshots, the BatchNorm
recalibration equals a direct computation, a resume across a snapshot is exact, eval --checkpoint swa."""
import subprocess
import sys

import pytest
import torch

import test_components  # noqa: F401  (registers test_bn_net)
from robustlab.config import config_from_dict
from robustlab.core.checkpoint import load_checkpoint
from robustlab.core.io import read_json, read_jsonl
from robustlab.engine import Trainer, train
from robustlab.engine.hooks import WeightAveraging
from robustlab.optim import swa as swa_module


def averager(trainer):
    """The run's weight averager (the SWA hook's)."""
    return next(h for h in trainer.hooks if isinstance(h, WeightAveraging)).averager


def cfg(epochs=4, **swa):
    return config_from_dict({
        "seed": 0, "plugins": ["test_components"], "data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
        "model": {"name": "test_bn_net"}, "method": {"name": "fgsm", "eps": 0.1},
        "optim": {"lr": 0.05, "schedule": "constant"},
        "train": {"epochs": epochs, "progress": "none", "threads": 1,
                  "swa": {"start_epoch": 2, "every_steps": 3, **swa}},
        "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []},
        "final_eval": {"points": 64, "steps": 3, "restarts": 1}})


def test_average_equals_the_manual_average_of_the_snapshots(tmp_path, monkeypatch):
    snapshots = []
    original = swa_module.WeightAverager.after_step

    def recording(self, model, epoch, step):
        before = self.snapshots
        original(self, model, epoch, step)
        if self.snapshots > before:
            snapshots.append({k: v.detach().clone() for k, v in model.named_parameters()})
            assert epoch + 1 >= 2 and step % 3 == 0
    monkeypatch.setattr(swa_module.WeightAverager, "after_step", recording)
    res = train(cfg(), tmp_path / "r", log=lambda s: None)
    swa = load_checkpoint(tmp_path / "r" / "checkpoints" / "swa.pt")["model"]
    assert len(snapshots) == res["final_eval"]["swa"]["snapshots"] > 1
    for name in snapshots[0]:
        manual = torch.stack([s[name] for s in snapshots]).mean(0)
        assert torch.allclose(swa[name], manual, atol=1e-6), name
    rows = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert "swa_test_pgd_acc" not in rows[0] and "swa_test_pgd_acc" in rows[1]    # evaluated once averaging starts


def test_clean_recalibration_equals_a_direct_computation(tmp_path):
    trainer = Trainer(cfg(recalibrate="clean"), tmp_path / "r", log=lambda s: None)
    trainer._build()
    averager(trainer).averaged.update_parameters(trainer.model)
    net = averager(trainer).module
    inputs = []
    hook = net[1].bn.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach().clone()))
    x, y = trainer.data.train.x, trainer.data.train.y
    averager(trainer).recalibrate(x, y, 50, trainer.autocast, torch.device("cpu"))
    hook.remove()
    assert len(inputs) == -(-len(y) // 50)
    means = torch.stack([t.mean((0, 2, 3)) for t in inputs])
    variances = torch.stack([t.var((0, 2, 3), unbiased=True) for t in inputs])
    bn = net[1].bn
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)       # a cumulative average over batches
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-5)
    assert bn.momentum == 0.1                                               # restored


def test_adversarial_recalibration_uses_attacked_training_points(tmp_path):
    t_clean = Trainer(cfg(recalibrate="clean"), tmp_path / "a", log=lambda s: None)
    t_adv = Trainer(cfg(recalibrate="auto"), tmp_path / "b", log=lambda s: None)   # auto: adversarial for FGSM-AT
    stats = []
    for t in (t_clean, t_adv):
        t._build()
        averager(t).averaged.update_parameters(t.model)
        averager(t).recalibrate(t.data.train.x, t.data.train.y, 64, t.autocast, torch.device("cpu"))
        stats.append(averager(t).module[1].bn.running_mean.clone())
    assert averager(t_adv).recal == "adversarial" and not torch.allclose(stats[0], stats[1])


def test_resume_across_a_snapshot_is_exact_and_eval_reads_swa(tmp_path):
    train(cfg(epochs=2), tmp_path / "resumed", log=lambda s: None)
    train(cfg(epochs=4), tmp_path / "resumed", log=lambda s: None)          # extended: the average comes back
    train(cfg(epochs=4), tmp_path / "straight", log=lambda s: None)
    drop = ("seconds", "eval_seconds", "swa_seconds")
    rows = [[{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(tmp_path / d / "metrics.jsonl")]
            for d in ("resumed", "straight")]
    assert rows[0] == rows[1]
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "swa.pt")["model"] for d in ("resumed", "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    out = tmp_path / "e.json"
    proc = subprocess.run([sys.executable, "-m", "robustlab", "eval", tmp_path / "straight", "--checkpoint", "swa",
                           "--n", "64", "--steps", "3", "--restarts", "1", "--sanity", "0", "--out", out],
                          capture_output=True, text=True, env={**__import__("os").environ,
                                                              "PYTHONPATH": str(__import__("pathlib").Path(__file__).parent)})
    assert proc.returncode == 0, proc.stderr
    res = read_json(out)
    fe = read_json(tmp_path / "straight" / "results.json")["final_eval"]["swa"]
    assert res["checkpoint"].endswith("swa.pt") and res["clean_acc"] == pytest.approx(fe["clean_acc"])
