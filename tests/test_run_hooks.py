"""Run hooks (engine/hooks): the phases run in their documented order, a hook's state travels through last.pt, a
new run-level feature is one class in RUN_HOOKS, and a run with SWA, kept epochs and a tracker resumes after
SIGKILL to the same metrics, averaged weights, kept checkpoints and tracker events as an uninterrupted run."""
import subprocess
import sys

import pytest
import torch
import yaml

from robustlab.config import config_from_dict
from robustlab.core.io import load_torch, read_jsonl
from robustlab.engine import hooks as hooks_module
from robustlab.engine import train
from robustlab.engine.hooks import RunHook

from helpers import train_killed_at


@pytest.fixture
def base(tiny_cfg):
    """tiny_cfg with an lr schedule that does not depend on the epoch count (so the run can be extended)."""
    tiny_cfg["optim"]["schedule"] = "constant"
    tiny_cfg["monitor"]["diagnostics"] = []
    return tiny_cfg


def comparable(rows):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


class StepCounter(RunHook):
    """A run-level feature of a user's: counts optimiser steps, logs every phase it sees, keeps its count."""
    name = "step_counter"
    calls: list = []
    stop_after = 0

    def __init__(self):
        self.steps = 0

    def start(self, run, start_epoch):
        self.calls.append(("start", start_epoch))

    def after_step(self, run, epoch, step, ctx):
        self.steps += 1

    def measure(self, run, epoch, row):
        assert "val_pgd_acc" in row          # the monitor measured first
        row["counted_steps"] = self.steps
        self.calls.append(("measure", epoch))

    def decide(self, run, epoch, row, history, score_key):
        assert history[-1] is row and score_key == "val_pgd_acc" and "co_fired" in row   # the CO rule decided first
        self.calls.append(("decide", epoch))

    def persist(self, run, epoch, row):
        assert read_jsonl(run.run_dir / "metrics.jsonl") == run.state.history[:-1]     # not yet recorded
        self.calls.append(("persist", epoch))

    def publish(self, run, epoch, row):
        assert read_jsonl(run.run_dir / "metrics.jsonl")[-1]["epoch"] == epoch + 1       # recorded
        self.calls.append(("publish", epoch))

    def stop(self, run, epoch, row):
        self.calls.append(("stop", epoch))
        return "enough" if epoch + 1 == self.stop_after else None

    def finish(self, run, results):
        self.calls.append(("finish", results["status"]))

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_phases_order_state_and_stop(tmp_path, monkeypatch, base):
    monkeypatch.setattr(hooks_module, "RUN_HOOKS", hooks_module.RUN_HOOKS + (StepCounter,))
    StepCounter.calls, StepCounter.stop_after = [], 0
    two = {**base, "train": {**base["train"], "epochs": 2}}
    res = train(config_from_dict(two), tmp_path / "r", log=lambda s: None)
    per_epoch = ["measure", "decide", "persist", "publish", "stop"]
    assert [c for c, _ in StepCounter.calls] == ["start"] + per_epoch * 2 + ["finish"]
    assert res["status"] == "finished" and res["epochs_completed"] == 2
    rows = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    steps_per_epoch = rows[0]["counted_steps"]
    assert steps_per_epoch > 0 and rows[1]["counted_steps"] == 2 * steps_per_epoch
    last = load_torch(tmp_path / "r" / "checkpoints" / "last.pt")
    assert last["components"]["step_counter"] == {"steps": 2 * steps_per_epoch}
    # extended to 4 epochs: the count resumes from the checkpoint (not from zero); the hook stops it after epoch 3
    StepCounter.calls, StepCounter.stop_after = [], 3
    res = train(config_from_dict({**base, "train": {**base["train"], "epochs": 4}}), tmp_path / "r", log=lambda s: None)
    assert StepCounter.calls[0] == ("start", 2)
    assert res["message"] == "enough" and res["epochs_completed"] == 3
    assert [r["counted_steps"] for r in read_jsonl(tmp_path / "r" / "metrics.jsonl")] == \
        [steps_per_epoch * k for k in (1, 2, 3)]


def test_sigkill_resume_with_swa_kept_epochs_and_tracker_is_exact(tmp_path, base):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = {**base, "train": {**base["train"], "epochs": 4, "keep_every": 1,
                             "swa": {"start_epoch": 2, "every_steps": 2},
                             "trackers": [{"name": "tensorboard"}]},
           "monitor": {**base["monitor"], "grad_norm_trace": True}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "robustlab", "train", str(path), "--out"]
    subprocess.run(cmd + [str(tmp_path / "ref")], check=True, capture_output=True, timeout=300)
    train_killed_at(path, tmp_path / "cut", epoch=3, step=3)          # inside epoch 3, with averaging started
    metrics = tmp_path / "cut" / "metrics.jsonl"
    assert len(read_jsonl(metrics)) == 2
    subprocess.run(cmd + [str(tmp_path / "cut")], check=True, capture_output=True, timeout=300)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert comparable(read_jsonl(metrics)) == comparable(read_jsonl(ref / "metrics.jsonl"))
    for name in ["last.pt", "swa.pt"] + [f"epoch_{e:04d}.pt" for e in (1, 2, 3, 4)]:
        a, b = load_torch(ref / "checkpoints" / name)["model"], load_torch(cut / "checkpoints" / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert read_jsonl(cut / "grad_norm_trace.jsonl") == read_jsonl(ref / "grad_norm_trace.jsonl")

    def scalars(run):
        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        return {(e.step, e.value) for e in acc.Scalars("val_pgd_acc")}
    assert scalars(cut) == scalars(ref)
