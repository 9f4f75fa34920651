"""The ``robustlab eval`` results stored in a run folder (``<run>/eval/*.json``), as report rows."""
from __future__ import annotations

from pathlib import Path

from robustlab.core.io import read_json

EVAL_HEADER = ["evaluation file", "checkpoint (epoch)", "protocol", "threat model", "eps", "points", "clean (%)",
               "robust (%)", "sanity checks"]


def run_evaluations(run_dir: Path) -> list[dict]:
    """Every evaluation JSON of the run, oldest first (resumable ``.state.json`` files are not results)."""
    found = []
    for path in sorted((Path(run_dir) / "eval").glob("*.json")):
        if path.name.endswith(".state.json"):
            continue
        try:
            res = read_json(path)
        except ValueError:
            continue
        if isinstance(res, dict) and "protocol" in res and "robust_acc" in res:
            found.append({**res, "file": path.name, "mtime": path.stat().st_mtime})
    return sorted(found, key=lambda r: r["mtime"])


def sanity_summary(res: dict) -> str:
    flags = res.get("sanity") or []
    if not flags:
        return "not run"
    failed = [f["check"] for f in flags if not f["passed"]]
    return f"FLAGS: {', '.join(failed)}" if failed else f"all {len(flags)} passed"


def branch_text(res: dict, fmt) -> str:
    """Split-BN models: which branch was evaluated, and the other branches' clean accuracy beside it."""
    b = res.get("split_bn")
    if not b:
        return ""
    others = "; ".join(f"{name} branch clean {fmt(acc, 'pct')} %" for name, acc in (b.get("clean_acc") or {}).items()
                       if name != b["evaluated"])
    role = "deployed" if b["evaluated"] == b["deployed"] else f"auxiliary; deployed: {b['deployed']}"
    return f" · {b['evaluated']} branch ({role})" + (f"; {others}" if others else "")


def eval_rows(evals: list[dict], fmt) -> list[list[str]]:
    return [[r["file"], f"{Path(str(r.get('checkpoint', '?'))).stem} ({r.get('epoch', '?')}){branch_text(r, fmt)}", r["protocol"],
             r.get("threat_model", "?"), str(r.get("eps", "?")), str(r.get("n_examples", "?")),
             fmt(r.get("clean_acc"), "pct"), fmt(r.get("robust_acc"), "pct"), sanity_summary(r)] for r in evals]
