"""SWA's per-epoch cost: the BatchNorm recalibration of the averaged model (one PGD pass over the training split on
the deployed branch, then a forward pass per branch) and its evaluation, against the epoch it follows.

    python benchmarks/bench_swa_epoch.py [--epochs 3] [--train-size 2000] [--threads 2]

Trains PGD-10-AT on mnist5k with a split-BN VGG-11 (width 0.25, the ARAT pilot's model) with ``train.swa`` from epoch 1
(a snapshot every --every steps) and reads each epoch's ``seconds`` (training), ``eval_seconds`` (the monitor) and ``swa_seconds``
(recalibration + the averaged model's evaluation + swa.pt) from metrics.jsonl. Run on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from robustlab.config import config_from_dict  # noqa: E402
from robustlab.engine import train  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--every", type=int, default=5, help="SWA snapshot every k steps")
    args = p.parse_args(argv)
    cfg = {"seed": 0, "data": {"name": "mnist5k", "val_size": 0, "train_size": args.train_size},
           "model": {"name": "vgg", "depth": 11, "width": 0.25, "norm_layer": {"name": "split_batchnorm"}},
           "method": {"name": "pgd", "eps": 0.2, "steps": 10},
           "optim": {"lr": 0.05, "schedule": "constant"},
           "train": {"epochs": args.epochs, "threads": args.threads, "progress": "none",
                     "swa": {"start_epoch": 1, "every_steps": args.every}},
           "monitor": {"eval_points": 250, "attack_steps": 10, "fgsm": False, "diagnostics": []},
           "final_eval": {"points": 0}}
    with tempfile.TemporaryDirectory() as tmp:
        train(config_from_dict(cfg), Path(tmp) / "run", log=lambda s: None)
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    print(f"# {platform.processor() or platform.machine()}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} threads, torch {torch.__version__}; {args.train_size} training images, batch 128")
    print("| epoch | training (s) | monitor (s) | SWA recalibration + evaluation (s) | SWA / training |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['epoch']} | {r['seconds']:.1f} | {r['eval_seconds']:.1f} | {r.get('swa_seconds', 0):.1f} | "
              f"{r.get('swa_seconds', 0) / r['seconds']:.2f}x |")
    ratio = statistics.median(r.get("swa_seconds", 0) / r["seconds"] for r in rows)
    print(f"# median SWA per-epoch cost: {ratio:.2f}x of the training epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
