"""Wall time of robustlab's PGD-50-10 and of the standard AutoAttack per 1,000 points (issue 5).

The cost of an evaluation depends on how robust the model is (fooled points stop being attacked), so this
measures the expensive end: a freshly initialised model, labels set to its own clean predictions (clean
accuracy 100 %) and a small eps (0.5/255) at which almost no point is fooled, so nearly every attack runs to
its full length on nearly every point. A robust model of the same architecture costs about this much; a
weaker one less. Each figure is measured on --points points and scaled to 1,000 (the work is per point).

With ``--run RUN_DIR`` it measures instead what a user pays on a trained run: ``robustlab eval`` of the run's
best checkpoint (its own eps and test points, the first --points[0]), once per attack, each from a fresh state
in a temporary folder, with the default sanity checks (--sanity points) timed separately.

Usage: python benchmarks/bench_eval_wall.py [--models small_cnn preact_resnet18] [--points 20 10]
       [--attacks pgd autoattack] [--threads 2] [--device cpu]
       python benchmarks/bench_eval_wall.py --run RUN_DIR --points 200 [--attacks pgd autoattack pgd+autoattack]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from robustlab.models import MODELS
from robustlab.protocols.cascade import PGDStage, autoattack_stages, run_cascade
from robustlab.attacks.accuracy import AttackSpec
from robustlab.models import build_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["small_cnn", "preact_resnet18"])
    ap.add_argument("--points", nargs="+", type=int, default=[20, 10], help="points per model (same order)")
    ap.add_argument("--attacks", nargs="+", default=["pgd", "autoattack"], choices=["pgd", "autoattack", "pgd+autoattack"])
    ap.add_argument("--run", default=None, help="a trained run folder: time `robustlab eval` on it instead")
    ap.add_argument("--sanity", type=int, default=200, help="with --run: sanity-check points")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--eps", type=float, default=0.5 / 255)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        return bench_run(args)
    device = torch.device(args.device)
    print("| model | attack | points | robust after | seconds | seconds per 1,000 points |")
    print("|---|---|---|---|---|---|")
    for name, n in zip(args.models, args.points):
        torch.manual_seed(0)
        model = build_model(MODELS.config_class(name)(name=name), (3, 32, 32), 10, (0.5,) * 3, (0.25,) * 3).to(device).eval()
        x = torch.rand(n, 3, 32, 32, device=device)
        with torch.no_grad():
            y = model(x).argmax(1)
        for attack in args.attacks:
            if attack == "pgd+autoattack":
                continue
            stages = ([PGDStage(AttackSpec("pgd", args.eps, None, 50, 10))] if attack == "pgd"
                      else autoattack_stages(args.eps, "linf"))
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            res = run_cascade(model, x, y, stages)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            label = "PGD-50-10" if attack == "pgd" else "AutoAttack (standard)"
            print(f"| {name} | {label} | {n} | {res['robust_acc']:.2f} | {dt:.1f} | {dt / n * 1000:.0f} |", flush=True)


def bench_run(args) -> None:
    """`robustlab eval` of a trained run (the CLI's defaults: best checkpoint, PGD-50-10): per attack, total and
    per-stage seconds, scaled to 1,000 points."""
    from robustlab.cli import build_parser
    from robustlab.eval.command import EvalRequest, run_eval

    n = args.points[0]
    print("| run | attack | points | clean | robust | attack seconds | per 1,000 points | stages (fooled, s) | sanity s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for attack in args.attacks:
        with tempfile.TemporaryDirectory() as tmp:
            ev = build_parser().parse_args(["eval", args.run, "--attack", attack, "--n", str(n), "--sanity",
                                            str(args.sanity), "--device", args.device, "--out", str(Path(tmp) / "e.json")])
            res = run_eval(EvalRequest.from_args(ev))
        stages = ", ".join(f"{s['name']} {s['fooled']}, {s['seconds']:.0f}" for s in res["stages"])
        print(f"| {Path(args.run).name} | {res['protocol']} | {res['n_examples']} | {res['clean_acc']:.3f} | "
              f"{res['robust_acc']:.3f} | {res['seconds']:.0f} | {res['seconds'] / res['n_examples'] * 1000:.0f} | "
              f"{stages} | {res['sanity_seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
