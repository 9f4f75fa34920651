"""The CPU-scale transfer claims (issue 13), computed from transfer study folders (one per CPU kernel path).

Criteria, fixed before the evidence was read (each counted per seed and per kernel path):
1. "SAM / l-SAM / LookSAM surrogates transfer better than the fully trained SGD surrogate": mean BIM success over the
   targets (denominator: all selected examples) of the arm's last checkpoint > SGD's last checkpoint, same seed.
2. "... than the early-stopped SGD surrogate": the same against SGD's best kept epoch (an oracle early stopping:
   the epoch with the highest transfer, chosen on the evaluation itself) and against SGD@10 (the last epoch before
   the first lr decay).
3. "transfer is highest where sharpness is lowest": Spearman rank correlation between the top Hessian eigenvalue and
   the mean success over all surrogates of a path (every arm, every kept epoch); and per SGD seed, whether the epoch
   of lowest sharpness is the epoch of highest transfer.
4. "the transfer peak follows the lr decay": per SGD seed, success after the first decay (epoch 14) > before it (10),
   and the epoch of peak transfer lies after epoch 10.
Usage: python benchmarks/transfer_evidence.py runs/transfer/transfer-default runs/transfer/transfer-avx2
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from robustlab.report.rank import spearman   # ties share their average rank


def load(folder: Path) -> tuple[dict, dict]:
    res = json.loads((folder / "results.json").read_text())
    rows = res["attacks"]["BIM"]["success_all"]
    table = {}
    for s, row in zip(res["surrogates"], rows):
        arm, epoch = s["label"].rsplit("@", 1)
        run = s["source"]["run"].split("@")[0]
        seed = json.loads((Path(run) / "env.json").read_text())["seed"]
        sharp = res["sharpness"].get(s["key"], {})
        table[(arm, seed, int(epoch))] = {"success": statistics.fmean(rows[res["surrogates"].index(s)]),
                                          "eig": sharp.get("hessian_top_eig"), "trace": sharp.get("hessian_trace")}
    return res, table


def main(folders: list[str]) -> None:
    for folder in map(Path, folders):
        res, t = load(folder)
        seeds = sorted({k[1] for k in t})
        epochs = sorted({k[2] for k in t})
        last = max(epochs)
        path = json.loads((Path(res["surrogates"][0]["source"]["run"].split("@")[0]) / "env.json").read_text())["kernel_path"]
        print(f"## {folder.name}: kernel path {path['cpu_capability']}, {res['n_examples']} examples, "
              f"{len(res['targets'])} targets, seeds {seeds}")
        print("\n| arm | seed | " + " | ".join(f"@{e}" for e in epochs) + " | top eig @last | trace @last |")
        print("|---|---|" + "---|" * (len(epochs) + 2))
        arms = sorted({k[0] for k in t}, key=lambda a: ["SGD", "SAM", "l-SAM", "LookSAM"].index(a) if a in
                      ["SGD", "SAM", "l-SAM", "LookSAM"] else 9)
        for arm in arms:
            for s in seeds:
                cells = [f"{100 * t[(arm, s, e)]['success']:.1f}" for e in epochs]
                c = t[(arm, s, last)]
                print(f"| {arm} | {s} | " + " | ".join(cells) + f" | {c['eig']:.3g} | {c['trace']:.3g} |")
        print()
        for arm in arms:
            if arm == "SGD":
                continue
            beat_last = sum(t[(arm, s, last)]["success"] > t[("SGD", s, last)]["success"] for s in seeds)
            beat_best = sum(t[(arm, s, last)]["success"] > max(t[("SGD", s, e)]["success"] for e in epochs) for s in seeds)
            beat_10 = sum(t[(arm, s, last)]["success"] > t[("SGD", s, 10)]["success"] for s in seeds)
            print(f"- {arm}@{last} beats SGD@{last} in {beat_last}/{len(seeds)} seeds, SGD@10 in {beat_10}/{len(seeds)}, "
                  f"SGD's best epoch (oracle) in {beat_best}/{len(seeds)}")
        keys = [k for k in t if t[k]["eig"] is not None]
        rho = spearman([t[k]["eig"] for k in keys], [t[k]["success"] for k in keys])
        rho_tr = spearman([t[k]["trace"] for k in keys], [t[k]["success"] for k in keys])
        print(f"- Spearman(top eigenvalue, success) over {len(keys)} surrogates: {rho:+.2f}; "
              f"Spearman(trace, success): {rho_tr:+.2f}")
        same = sum(min(epochs, key=lambda e: t[("SGD", s, e)]["eig"]) == max(epochs, key=lambda e: t[("SGD", s, e)]["success"])
                   for s in seeds)
        print(f"- SGD: the epoch of lowest sharpness is the epoch of highest transfer in {same}/{len(seeds)} seeds")
        up = sum(t[("SGD", s, 14)]["success"] > t[("SGD", s, 10)]["success"] for s in seeds)
        peak_after = sum(max(epochs, key=lambda e: t[("SGD", s, e)]["success"]) > 10 for s in seeds)
        peaks = [max(epochs, key=lambda e: t[("SGD", s, e)]["success"]) for s in seeds]
        print(f"- SGD: success rises across the first lr decay (epoch 10 -> 14) in {up}/{len(seeds)} seeds; "
              f"peak epochs {peaks} (after epoch 10 in {peak_after}/{len(seeds)})\n")


if __name__ == "__main__":
    main(sys.argv[1:])
