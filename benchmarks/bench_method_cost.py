"""Epoch cost of each single-step method relative to FGSM-AT, in one process on the same data.

Each method trains on the same first N batches of mnist5k (Wong net, and the small CNN) through the
trainer's own epoch loop (no evaluation); methods alternate across rounds; median of rounds.
Pass counts per batch of B images (F = forward, Bw = backward through the network):
  FGSM-AT 2F + 2Bw; RS-/N-FGSM the same; PGD-k (k+1)F + (k+1)Bw;
  + ELLE: one 3B forward and backward (+3F + 3Bw): 2.5x FGSM's passes;
  + GradAlign: two input gradients (+2F + 2Bw), one with create_graph, then the double backward
    through the second (~ +2Bw): about 3x; LLR similar (one gradient with create_graph, one more
    forward); CURE two input gradients with a double backward.
Usage: python benchmarks/bench_method_cost.py [--batches 8] [--rounds 3] [--models wong_mnist small_cnn]
       [--methods FGSM FGSM+ELLE ...] [--no-keep-heap]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustlab.config import config_from_dict
from robustlab.engine.trainer import Trainer

METHODS = {
    "FGSM": {"name": "fgsm"},
    "RS-FGSM": {"name": "rs_fgsm"},
    "N-FGSM": {"name": "n_fgsm"},
    "PGD-2": {"name": "pgd", "steps": 2},
    "GAT": {"name": "gat"},
    "FGSM+ELLE": {"name": "fgsm", "regularizers": [{"name": "elle"}]},
    "FGSM+ELLE (fused 4B)": {"name": "fgsm", "regularizers": [{"name": "elle", "fuse_forward": True}]},
    "FGSM+ELLE (3 passes of B)": {"name": "fgsm", "regularizers": [{"name": "elle", "triplet_passes": 3}]},
    "FGSM+ELLE-A": {"name": "fgsm", "regularizers": [{"name": "elle_a"}]},
    "FGSM+GradAlign": {"name": "fgsm", "regularizers": [{"name": "gradalign"}]},
    "FGSM+LLR": {"name": "fgsm", "regularizers": [{"name": "llr", "weight": 1.0}]},
    "FGSM+CURE": {"name": "fgsm", "regularizers": [{"name": "cure", "weight": 1.0}]},
}


def epoch_runner(model: str, method: dict, batches: int, batch: int, keep_heap: bool = True):
    cfg = config_from_dict({"data": {"name": "mnist5k", "val_size": 0, "batch_size": batch}, "model": {"name": model},
                            "method": {"eps": 0.1, **method},
                            "train": {"epochs": 1, "progress": "none", "cpu_keep_heap": keep_heap},
                            "monitor": {"diagnostics": []}})
    t = Trainer(cfg, "/nonexistent")
    t._build()
    t.loader.x, t.loader.y = t.loader.x[:batches * batch], t.loader.y[:batches * batch]
    return lambda: t._train_epoch(0, 0, "none")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["wong_mnist", "small_cnn"])
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), help=f"a subset of: {', '.join(METHODS)}")
    ap.add_argument("--no-keep-heap", action="store_true", help="glibc's default allocator behaviour (train.cpu_keep_heap=false)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| model | method | seconds per {args.batches} batches | relative to FGSM |")
    print("|---|---|---|---|")
    for model in args.models:
        runners = {k: epoch_runner(model, METHODS[k], args.batches, args.batch, not args.no_keep_heap)
                   for k in ["FGSM"] + [m for m in args.methods if m != "FGSM"]}
        for run in runners.values():
            run()  # warm-up
        times = {k: [] for k in runners}
        for _ in range(args.rounds):
            for k, run in runners.items():
                t0 = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"| {model} | {k} | {v:.3f} | {v / med['FGSM']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
