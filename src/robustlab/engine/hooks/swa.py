"""Stochastic weight averaging as a run hook (``train.swa``; the averager is :mod:`robustlab.optim.swa`).

After each step the averager may take a snapshot; once averaging has started, each epoch recalibrates the averaged
model's BatchNorm statistics, evaluates it like the model (``swa_{split}_*`` columns, the monitor's attacks) and
keeps it as ``checkpoints/swa.pt``; the final evaluation adds ``final_eval["swa"]`` for it (:meth:`final_models`).
"""
from __future__ import annotations

import time

from robustlab.core import checkpoint as ckpt_io
from robustlab.engine.hooks.base import RunHook
from robustlab.engine.hooks.monitor import accuracy_columns, measured_epoch, monitor_protocols, split_size
from robustlab.optim.swa import build_averager


class WeightAveraging(RunHook):
    name = "swa"

    def __init__(self, averager):
        self.averager = averager

    @classmethod
    def build(cls, cfg, run):
        averager = build_averager(cfg.train.swa, run.model, cfg.method.eps, cfg.method.norm,
                                  adversarial_method=cfg.method.name != "standard")
        return None if averager is None else cls(averager)

    @property
    def started(self) -> bool:
        return self.averager.snapshots > 0

    def after_step(self, run, epoch: int, step: int, ctx: dict) -> None:
        self.averager.after_step(run.model, epoch, step)

    def measure(self, run, epoch: int, row: dict) -> None:
        if not self.started or not measured_epoch(run.cfg, epoch):
            return
        t0 = time.perf_counter()
        self.averager.recalibrate(run.data.train.x, run.data.train.y, run.cfg.data.batch_size, run.autocast, run.device)
        row["swa_snapshots"] = self.averager.snapshots
        protocols = monitor_protocols(run.cfg)
        for split in ("val", "test"):
            if split_size(run, split) == 0:     # as the monitor: every rank takes part or none
                continue
            xs, ys = run.eval_sets[split]
            row.update(accuracy_columns(run.evaluate(xs, ys, protocols, model=self.averager.module), protocols, f"swa_{split}"))
        row["swa_seconds"] = time.perf_counter() - t0

    def persist(self, run, epoch: int, row: dict) -> None:
        if self.started:
            run.write(ckpt_io.save_weights, run.ckpt_dir / "swa.pt", model=self.averager.module, epoch=epoch + 1,
                      config=run.cfg.to_dict(), metrics=row)

    def final_models(self, run) -> dict:
        """The averaged, recalibrated model of the last epoch, for the final evaluation."""
        return {"swa": (self.averager.module, {"snapshots": self.averager.snapshots})} if self.started else {}

    def state_dict(self):
        return self.averager.state_dict()

    def load_state_dict(self, state) -> None:
        self.averager.load_state_dict(state)
