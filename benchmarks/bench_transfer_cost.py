"""Costs of the transfer line (issue 13): crafting per 1,000 points (BIM-50 and MI-DI-TI-50, the LGV protocol's
50 iterations, L-inf 4/255) and one sharpness measurement (top eigenvalue by power iteration + Hutchinson trace) on
mnist5k with the small CNN and the Wong net, untrained (the cost does not depend on the weights: no early stop).
Usage: python benchmarks/bench_transfer_cost.py [--points 1000] [--sharpness-points 1000] [--models small_cnn wong_mnist]
"""
from __future__ import annotations

import argparse
import time

import torch

from robustlab.attacks.transfer import DIConfig, TIConfig, TransferAttack
from robustlab.config import config_from_dict
from robustlab.data import build_data, to_float
from robustlab.diagnostics.sharpness import sharpness
from robustlab.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--sharpness-points", type=int, default=1000)
    ap.add_argument("--models", nargs="+", default=["small_cnn", "wong_mnist"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | work | seconds |")
    print("|---|---|---|")
    for name in args.models:
        cfg = config_from_dict({"data": {"name": "mnist5k", "val_size": 0}, "model": {"name": name}})
        data = build_data(cfg.data, 0)
        model = build_model(cfg.model, data.shape, data.num_classes, data.mean, data.std).eval()
        x, y = to_float(data.test.x[:args.points]), data.test.y[:args.points]
        for label, kw in (("BIM-50", {}), ("MI-DI-TI-50", {"decay": 1.0, "di": DIConfig(), "ti": TIConfig(7, 3.0)})):
            atk = TransferAttack(model, 4 / 255, None, 50, generator=torch.Generator().manual_seed(0), **kw)
            t0 = time.perf_counter()
            for i in range(0, len(y), 250):
                atk(x[i:i + 250], y[i:i + 250])
            print(f"| {name} | craft {label}, {len(y)} points | {time.perf_counter() - t0:.1f} |", flush=True)
        xs, ys = to_float(data.train.x[:args.sharpness_points]), data.train.y[:args.sharpness_points]
        t0 = time.perf_counter()
        res = sharpness(model, xs, ys, iters=20, samples=20)
        print(f"| {name} | sharpness on {len(ys)} training points ({res['hessian_power_iters']} power iterations + "
              f"20 Hutchinson probes) | {time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
