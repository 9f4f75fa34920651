"""Overhead of the Ray backend against the local backend on a small study (4 tiny trials, 2 workers).

Both backends run the same 4 trials (synthetic data, Wong net, FGSM-AT, 3 epochs) into fresh folders;
the wall time includes starting and stopping the local Ray cluster.
Usage: python benchmarks/bench_sweep_overhead.py [--repeats 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from robustlab.sweep import expand_study, run_sweep

STUDY = {"name": "overhead", "workers": 2, "resources": {"cpus": 1},
         "base": {"data": {"name": "synthetic", "val_size": 64, "batch_size": 64}, "model": {"name": "wong_mnist"},
                  "method": {"name": "fgsm", "eps": 0.1}, "train": {"epochs": 3, "progress": "none"},
                  "monitor": {"eval_points": 128, "attack_steps": 3}, "final_eval": {"points": 0}},
         "grid": {"seed": [0, 1, 2, 3]}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    times = {"local": [], "ray": []}
    for _ in range(args.repeats):
        for backend in times:
            t0 = time.perf_counter()
            summary = run_sweep(expand_study(STUDY), tempfile.mkdtemp() + "/s", backend=backend, log=lambda s: None)
            assert summary["finished"] == 4
            times[backend].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    print("| backend | wall s (best of %d) | all runs |" % args.repeats)
    print("|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {best[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} |")
    print(f"Ray overhead: {best['ray'] - best['local']:+.1f} s ({best['ray'] / best['local']:.2f}x) for 4 trials")


if __name__ == "__main__":
    main()
