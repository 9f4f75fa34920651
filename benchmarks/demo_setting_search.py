"""Search for the demo's CPU-scale catastrophic-overfitting setting on mnist5k.

Each candidate setting is trained for 3 seeds with FGSM-AT (and the other demo methods for the winner);
the table records, per run, the best and final test PGD accuracy and the final FGSM accuracy.
Usage: python benchmarks/demo_setting_search.py OUT_DIR NAME [NAME ...]   (NAME from CANDIDATES below)
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


from robustlab.config import config_from_dict
from robustlab.engine import train

BASE = {"data": {"name": "mnist5k", "val_size": 500, "inject": {"kind": "carriers", "beta": 0.15}},
        "model": {"name": "wong_mnist"},
        "method": {"name": "fgsm", "eps": 0.2, "eps_ramp_epochs": 3},
        "optim": {"name": "sgd", "lr": 0.1, "schedule": "cyclic"},
        "train": {"epochs": 20, "progress": "none", "threads": 1},
        "monitor": {"eval_points": 500, "attack_steps": 10},
        "final_eval": {"points": 0}}


def merge(base, over):
    out = json.loads(json.dumps(base))
    for k, v in over.items():
        if isinstance(v, dict):
            out[k] = merge(out.get(k, {}), v)
        else:
            out[k] = v
    return out


CANDIDATES = {
    "A_notes": {},
    "B_ramp5": {"method": {"eps_ramp_epochs": 5}},
    "C_lr05": {"optim": {"lr": 0.05}},
    "D_adam": {"optim": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0}},
    "E_beta10": {"data": {"inject": {"beta": 0.10}}},
    "F_warm_ramp5_lr05": {"optim": {"lr": 0.05}, "method": {"eps_ramp_epochs": 5}},
    "G_smallcnn": {"model": {"name": "small_cnn"}, "train": {"epochs": 15}},
    "E_pgd5": {"data": {"inject": {"beta": 0.10}}, "method": {"steps": 5}},
    "H_eps15_beta10": {"method": {"eps": 0.15}, "data": {"inject": {"beta": 0.10}}},
}

if __name__ == "__main__":
    out, names = Path(sys.argv[1]), sys.argv[2:]
    methods = ["fgsm"]
    if names and names[0].startswith("methods="):
        methods = names[0].split("=", 1)[1].split(",")
        names = names[1:]
    for name in names:
        for method in methods:
            for seed in (0, 1, 2):
                raw = merge(merge(BASE, CANDIDATES[name]), {"seed": seed, "method": {"name": method}})
                t = time.time()
                run = out / f"{name}-{method}-s{seed}"
                train(config_from_dict(raw), run, log=lambda s: None)
                from robustlab.report.runs import load_run
                r = load_run(run)
                pgd = [m["test_pgd_acc"] for m in r.metrics]
                fg = [m["test_fgsm_acc"] for m in r.metrics]
                print(json.dumps({"setting": name, "method": method, "seed": seed, "best_pgd": round(max(pgd), 3),
                                  "best_pgd_epoch": pgd.index(max(pgd)) + 1, "final_pgd": round(pgd[-1], 3),
                                  "final_fgsm": round(fg[-1], 3), "final_clean": round(r.metrics[-1]["test_clean_acc"], 3),
                                  "pgd_curve": [round(p, 2) for p in pgd], "seconds": round(time.time() - t, 1)}), flush=True)
