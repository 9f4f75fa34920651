"""What the adoption features cost (issue 15): a run's wall time with no tracker, with TensorBoard and with MLflow
(local SQLite store), and an evaluation's wall time with and without per-step progress lines.

Runs alternate across rounds in one process on the same data (mnist5k, Wong net, FGSM-AT, the monitor on 500 test
points); median of rounds. The tracker cost is per run (start, one call per epoch, finish), so it is reported per
epoch over short runs, the worst case.
Usage: python benchmarks/bench_tracking_overhead.py [--epochs 3] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from robustlab.config import config_from_dict
from robustlab.engine import train

BASE = {"seed": 0, "data": {"name": "mnist5k", "val_size": 500, "train_size": 1000},
        "model": {"name": "wong_mnist"}, "method": {"name": "fgsm", "eps": 0.1}, "optim": {"lr": 0.05},
        "train": {"epochs": 3, "progress": "none"},
        "monitor": {"eval_points": 500, "val_points": 500, "diagnostics": []}, "final_eval": {"points": 0}}
ARMS = {"none": [], "tensorboard": ["tensorboard"], "mlflow": ["mlflow"]}


def one_run(arm: str, epochs: int, root: Path) -> float:
    trackers = [{"name": n, **({"tracking_uri": f"sqlite:///{root / 'ml.db'}"} if n == "mlflow" else {})}
                for n in ARMS[arm]]
    cfg = config_from_dict(BASE, {"train.epochs": epochs, "train.trackers": trackers})
    out = Path(tempfile.mkdtemp(dir=root))
    t0 = time.perf_counter()
    train(cfg, out, log=lambda s: None)
    return time.perf_counter() - t0


def eval_progress(rounds: int) -> dict:
    from robustlab.attacks import AttackSpec
    from robustlab.protocols.cascade import PGDStage, run_cascade
    from robustlab.models import build_model
    from robustlab.config import config_from_dict as cfd
    from robustlab.data import build_data
    cfg = cfd(BASE)
    data = build_data(cfg.data, 0)
    model = build_model(cfg.model, data.shape, data.num_classes, data.mean, data.std).eval()
    x, y = data.test.x[:500].float() / 255, data.test.y[:500]
    y = model(x).argmax(1)     # every point clean-correct: the worst case, all points attacked
    stage = [PGDStage(AttackSpec("pgd", 0.002, None, 20, 1))]   # a tiny eps: every point survives all 20 steps
    times = {"silent": [], "per-step lines": []}
    for _ in range(rounds):
        for arm, every in (("silent", float("inf")), ("per-step lines", 0.0)):
            t0 = time.perf_counter()
            run_cascade(model, x, y, stage, chunk=100, batch_size=100, log=lambda s: None, progress_every=every)
            times[arm].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        times = {arm: [] for arm in ARMS}
        for _ in range(args.rounds):
            for arm in ARMS:
                times[arm].append(one_run(arm, args.epochs, root))
    base = statistics.median(times["none"])
    print(f"run of {args.epochs} epochs (median of {args.rounds}):")
    for arm, ts in times.items():
        med = statistics.median(ts)
        print(f"  {arm:12s} {med:6.2f} s  overhead {med - base:+.2f} s = {(med - base) / args.epochs:+.3f} s/epoch "
              f"({med / base:.3f}x)")
    ev = eval_progress(args.rounds)
    print(f"PGD-20 (eps 0.002: no point fooled, all steps run) on 500 points, 5 chunks: silent {ev['silent']:.2f} s, per-step progress lines "
          f"{ev['per-step lines']:.2f} s ({ev['per-step lines'] / ev['silent']:.3f}x)")


if __name__ == "__main__":
    main()
