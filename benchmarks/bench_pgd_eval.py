"""PGD-50 evaluation time: robustlab against torchattacks on the same model, points and budget.

Both run PGD-50 (L-inf, one random start, step eps/4, fp32, eval mode) on the same N test points of
the same trained model and report robust accuracy and seconds; both timings include the clean-accuracy
pass. robustlab skips points misclassified clean and freezes each point at the first iterate that fools
it (its verdict can only be stronger); torchattacks runs every step on every point and the adversarial
points are classified afterwards. Models are trained by robustlab first (cached in --cache).

Usage: python benchmarks/bench_pgd_eval.py [--n 1000] [--cache /tmp/robustlab-bench]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from robustlab.config import config_from_dict
from robustlab.data import build_data
from robustlab.engine import train
from robustlab.core.checkpoint import load_checkpoint
from robustlab.eval import predict
from robustlab.protocols import evaluate, pgd_protocol
from robustlab.models import build_model

MODELS = {
    # name: (config, evaluation eps); the run folder is named by the part before " (", so rows share models
    "wong_mnist PGD-AT (robust)": ({"data": {"name": "mnist5k", "val_size": 500}, "model": {"name": "wong_mnist"},
                                    "method": {"name": "pgd", "eps": 0.1, "steps": 5}, "train": {"epochs": 8}}, 0.1),
    "wong_mnist PGD-AT (partly robust: trained at 0.1, evaluated at 0.2)": (
        {"data": {"name": "mnist5k", "val_size": 500}, "model": {"name": "wong_mnist"},
         "method": {"name": "pgd", "eps": 0.1, "steps": 5}, "train": {"epochs": 8}}, 0.2),
    "small_cnn standard (not robust)": ({"data": {"name": "mnist5k", "val_size": 500}, "model": {"name": "small_cnn"},
                                         "method": {"name": "standard"}, "train": {"epochs": 3}}, 0.1),
}


def get_model(name, cfg_raw, cache: Path):
    raw = json.loads(json.dumps(cfg_raw))
    raw["train"].update({"progress": "none"})
    raw["monitor"] = {"eval_points": 200, "attack_steps": 5}
    raw["final_eval"] = {"points": 0}
    cfg = config_from_dict(raw)
    run = cache / name.split(" (")[0].replace(" ", "_")
    train(cfg, run, log=lambda s: None)
    data = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.shape, data.num_classes, data.mean, data.std)
    model.load_state_dict(load_checkpoint(run / "checkpoints" / "last.pt")["model"])
    return model.eval(), data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/robustlab-bench")
    ap.add_argument("--only", nargs="*", default=None, help="substrings of model names to run")
    args = ap.parse_args()
    import torchattacks
    torch.set_num_threads(args.threads)
    rows = []
    for name, (cfg_raw, eps) in MODELS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        model, data = get_model(name, cfg_raw, Path(args.cache))
        x, y = data.test.x[:args.n].float() / 255, data.test.y[:args.n]
        alpha = eps / 4
        times = {"robustlab": [], "torchattacks": []}
        accs = {}
        for _ in range(2):  # alternate A B A B
            res = evaluate(model, x, y, [pgd_protocol(args.steps, 1, alpha)], eps, batch_size=args.batch)
            times["robustlab"].append(res["seconds"])
            accs["robustlab"] = res[f"PGD-{args.steps}-1"]["robust_acc"]
            t0 = time.perf_counter()
            predict(model, x, args.batch)  # an evaluation reports clean accuracy too, as robustlab's does
            atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps, random_start=True)
            robust = torch.cat([predict(model, atk(x[i:i + args.batch], y[i:i + args.batch]), args.batch)
                                == y[i:i + args.batch] for i in range(0, len(y), args.batch)])
            times["torchattacks"].append(time.perf_counter() - t0)
            accs["torchattacks"] = robust.float().mean().item()
        clean = (predict(model, x, args.batch) == y).float().mean().item()
        row = {"model": name, "eps": eps, "n": len(y), "clean_acc": round(clean, 4),
               "robustlab_s": round(min(times["robustlab"]), 2), "torchattacks_s": round(min(times["torchattacks"]), 2),
               "speedup": round(min(times["torchattacks"]) / min(times["robustlab"]), 2),
               "robustlab_acc": round(accs["robustlab"], 4), "torchattacks_acc": round(accs["torchattacks"], 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"# machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"torchattacks {torchattacks.__version__}; PGD-{args.steps}, 1 restart, step eps/4, fp32")
    print("| model | eps | n | clean | robustlab s | torchattacks s | speed-up | robust acc robustlab | robust acc torchattacks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['eps']} | {r['n']} | {r['clean_acc']} | {r['robustlab_s']} | {r['torchattacks_s']} | "
              f"{r['speedup']}x | {r['robustlab_acc']} | {r['torchattacks_acc']} |")


if __name__ == "__main__":
    main()
