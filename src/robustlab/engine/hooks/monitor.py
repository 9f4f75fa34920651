"""The per-epoch monitor: clean and robust accuracy on fixed subsets of the validation and test splits (and of the
training split with its training labels, ``monitor.train_points``), with the monitor's attacks (``monitor``: PGD with
``attack_steps``, ``attack_restarts`` and step ``attack_alpha``, plus FGSM when ``monitor.fgsm``).

Columns ``{split}_clean_acc`` and ``{split}_{attack}_acc``. The score that picks ``best.pt`` and feeds the CO rule is
the first of ``val_pgd_acc``, ``test_pgd_acc``, ``val_clean_acc`` in the row (:func:`score_key`). Non-finite outputs
on the monitor points stop the run as diverged before that epoch's checkpoint or row is written. With
``monitor.every`` = k the accuracies are measured after every k-th epoch and the last (:func:`measured_epoch`); the
other rows lack them, and only measured epochs compete for ``best.pt``.
"""
from __future__ import annotations

import math
import time

from robustlab.diagnostics.base import due_epoch
from robustlab.engine.hooks.base import Diverged, RunHook
from robustlab.protocols import Protocol, fgsm_protocol, pgd_protocol

SCORE_KEYS = ("val_pgd_acc", "test_pgd_acc", "val_clean_acc")


def score_key(row: dict) -> str | None:
    """The column of the row that ranks epochs (best checkpoint) and that the CO rule watches."""
    return next((k for k in SCORE_KEYS if k in row), None)


def measured_epoch(cfg, epoch: int) -> bool:
    """Whether the accuracies are measured after 0-based ``epoch``: every ``monitor.every``-th epoch and the last."""
    return due_epoch(epoch, cfg.monitor.every, cfg.train.epochs)


def score(row: dict, key: str | None) -> float:
    value = row.get(key, 0.0) if key else 0.0
    return -math.inf if value is None or math.isnan(value) else value


def monitor_protocols(cfg) -> list[Protocol]:
    """The monitor's protocols at the run's eps (none without a threat radius); SWA's and the split-BN branches'
    evaluations use the same."""
    if cfg.method.eps <= 0:
        return []
    m = cfg.monitor
    return [pgd_protocol(m.attack_steps, m.attack_restarts, m.attack_alpha)] + ([fgsm_protocol()] if m.fgsm else [])


def split_size(run, split: str) -> int:
    return len(getattr(run.data, "train" if split == "trainset" else split))


def accuracy_columns(res: dict, protocols: list[Protocol], prefix: str) -> dict:
    """``{prefix}_clean_acc`` and ``{prefix}_{protocol}_acc`` from the run's evaluation (``run.evaluate``)."""
    row = {f"{prefix}_clean_acc": res["clean"]}
    row.update({f"{prefix}_{p.cfg.name}_acc": acc for p, acc in zip(protocols, res["robust"])})
    return row


class EpochMonitor(RunHook):
    def measure(self, run, epoch: int, row: dict) -> None:
        if not measured_epoch(run.cfg, epoch):
            return
        t0 = time.perf_counter()
        protocols = monitor_protocols(run.cfg)
        for split, (x, y) in run.eval_sets.items():
            if split_size(run, split) == 0:
                continue
            res = run.evaluate(x, y, protocols)
            if res["nonfinite"]:        # before any checkpoint of this epoch is kept, before a row is logged
                raise Diverged(f"non-finite outputs on {res['nonfinite']} of the {split} monitor points after epoch "
                               f"{epoch + 1}")
            row.update(accuracy_columns(res, protocols, split))
        row["eval_seconds"] = time.perf_counter() - t0

    @staticmethod
    def describe(run) -> dict:
        """What the per-epoch accuracies are measured with: attacks, eps, points per split (for reports)."""
        eps, norm = run.cfg.method.eps, run.cfg.method.norm
        return {"attacks": [p.title(eps, norm) for p in monitor_protocols(run.cfg)], "eps": eps,
                "norm": run.cfg.method.norm,
                "points": {split: len(y) * run.dist.world for split, (_, y) in run.eval_sets.items()}}

    @staticmethod
    def line(run, epoch: int) -> str:
        sets = ", ".join(f"{len(y) * run.dist.world} {split}" for split, (_, y) in run.eval_sets.items())
        eps, norm = run.cfg.method.eps, run.cfg.method.norm
        attacks = " + ".join(p.title(eps, norm) for p in monitor_protocols(run.cfg)) or "clean accuracy"
        return f"epoch {epoch + 1}/{run.cfg.train.epochs}: monitor {attacks} on {sets} points ..."
