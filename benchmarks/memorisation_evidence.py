"""Tables of the memorisation claims from study folders (one per CPU kernel path), for docs/memorisation.md.

    python benchmarks/memorisation_evidence.py random-labels runs/rl-default runs/rl-avx2
    python benchmarks/memorisation_evidence.py overfitting runs/ro-default runs/ro-avx2

Every figure is read from the runs' metrics.jsonl and env.json (kernel path); the criteria are fixed here, before
looking at the numbers:

- random labels: a run **fits** the random labels adversarially when it finishes and its final PGD-10 accuracy on the
  noisy training points is >= 0.5 (chance ~0.1); it **collapses** when that accuracy first reached >= 0.5 and ends
  below 0.2; it **diverges** when the trainer stopped it on a non-finite loss (status ``diverged``); instability is
  the largest per-epoch max of the squared gradient norm (``grad_norm_sq_max``) over the run.
- robust overfitting: the gap best - last of the monitor's per-epoch test PGD accuracy (``pgd_gap``); a run
  **overfits** when the gap is >= 0.05; a method **narrows** the gap when its gap is below PGD-AT's for the same
  seed and kernel path.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from robustlab.core.io import read_json, read_jsonl  # noqa: E402
from robustlab.core.layout import load_manifest, trial_dir  # noqa: E402
from robustlab.diagnostics import robust_overfitting  # noqa: E402


def runs(study_dirs: list[str]) -> list[dict]:
    """One record per trial: label, eps, seed, kernel path, metrics."""
    out = []
    for d in study_dirs:
        manifest = load_manifest(Path(d))
        for t in manifest["trials"]:
            run = trial_dir(Path(d), t["name"])
            metrics = read_jsonl(run / "metrics.jsonl")
            env = read_json(run / "env.json") if (run / "env.json").is_file() else {}
            kp = env.get("kernel_path", {})
            path = kp.get("ATEN_CPU_CAPABILITY") or f"default ({kp.get('cpu_capability', '?')})"
            status = read_json(run / "results.json").get("status") if (run / "results.json").is_file() else "pending"
            if status not in ("finished", "diverged"):
                continue                     # only runs that ended count (a running or interrupted one does not)
            out.append({"label": t["overrides"].get("label", t["name"]), "eps": t["config"]["method"]["eps"],
                        "seed": t["config"]["seed"], "path": path, "metrics": metrics, "status": status})
    return out


def fmt(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.fmean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def random_labels(records: list[dict]) -> str:
    groups = defaultdict(list)
    for r in records:
        groups[(r["label"], r["eps"], r["path"])].append(r)
    lines = ["| method | eps | kernel path | runs | fit (final PGD on noisy train >= 0.5) | collapsed after fitting | diverged | "
             "final PGD on noisy train, mean (min-max) | peak | max squared grad norm |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (label, eps, path), group in sorted(groups.items()):
        finals, peaks, spikes, fit, collapsed, diverged, n = [], [], [], 0, 0, 0, 0
        for r in group:
            curve = [m.get("trainset_pgd_acc") for m in r["metrics"] if m.get("trainset_pgd_acc") is not None]
            if not curve:
                continue
            n += 1
            peaks.append(max(curve))
            spikes.append(max(m.get("grad_norm_sq_max") or 0.0 for m in r["metrics"]))
            if r["status"] == "diverged":
                diverged += 1
                continue
            finals.append(curve[-1])
            fit += curve[-1] >= 0.5
            collapsed += max(curve) >= 0.5 and curve[-1] < 0.2
        lines.append(f"| {label} | {eps:g} | {path} | {n} | {fit}/{n} | {collapsed}/{n} | {diverged}/{n} | "
                     f"{fmt(finals)} | {fmt(peaks)} | {fmt(spikes)} |")
    return "\n".join(lines)


def overfitting(records: list[dict]) -> str:
    gaps = {}
    for r in records:
        ro = robust_overfitting(r["metrics"], "test_pgd_acc")
        if ro:
            gaps[(r["label"], r["path"], r["seed"])] = ro
    labels = sorted({k[0] for k in gaps})
    paths = sorted({k[1] for k in gaps})
    lines = ["| method | kernel path | runs | overfits (gap >= 0.05) | gap best - last, mean (min-max) | best PGD | last PGD | "
             "best epoch | gap below PGD-AT's (same seed and path) |", "|---|---|---|---|---|---|---|---|---|"]
    for label in labels:
        for path in paths:
            rows = [(k, v) for k, v in gaps.items() if k[0] == label and k[1] == path]
            if not rows:
                continue
            narrower = [v["gap"] < gaps[("PGD-AT", path, k[2])]["gap"] for k, v in rows if ("PGD-AT", path, k[2]) in gaps]
            lines.append(f"| {label} | {path} | {len(rows)} | {sum(v['gap'] >= 0.05 for _, v in rows)}/{len(rows)} | "
                         f"{fmt([v['gap'] for _, v in rows])} | {fmt([v['best'] for _, v in rows])} | "
                         f"{fmt([v['last'] for _, v in rows])} | {fmt([float(v['best_epoch']) for _, v in rows])} | "
                         + ("-" if label == "PGD-AT" else f"{sum(narrower)}/{len(narrower)}") + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("claim", choices=["random-labels", "overfitting"])
    p.add_argument("studies", nargs="+", help="study folders (one per kernel path)")
    args = p.parse_args()
    records = runs(args.studies)
    print(random_labels(records) if args.claim == "random-labels" else overfitting(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
