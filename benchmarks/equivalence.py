"""Bit-identical check for refactors: run studies, keep every trial's metrics (timings dropped), compare.

A refactor that must not change behaviour (issue 10, the component redesign) is proven by running the same
studies before and after it on the same machine and kernel path and comparing the per-epoch metrics and
final evaluations exactly (float equality, no tolerance). Timings (keys ending in ``seconds``) are dropped.

    python benchmarks/equivalence.py record OUT.json [--epochs 4] [--study FILE ...]
    python benchmarks/equivalence.py compare BEFORE.json AFTER.json

``record`` runs each study (default: the demo and configs/studies/elle_mnist5k.yaml) with ``train.epochs``
overridden (the shortened runs still cover the eps ramp, every method and regulariser) into a temporary
folder and writes {study: {trial: {"metrics": [...], "final_eval": {...}}}} with the machine and kernel
path. ``compare`` prints every difference and exits 1 if there is one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STUDIES = ["demo", str(ROOT / "configs" / "studies" / "elle_mnist5k.yaml")]


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not k.endswith("seconds")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _study_raw(name: str) -> tuple[dict, Path]:
    if name == "demo":
        from robustlab.demo import demo_study_raw
        return demo_study_raw(), ROOT
    path = Path(name)
    return yaml.safe_load(path.read_text()), path.parent


def record(out: Path, studies: list[str], epochs: int, workers: int) -> None:
    try:   # the same script runs on the tree before the component redesign and after it
        from robustlab.core.io import read_json, read_jsonl
    except ImportError:
        from robustlab.engine.io import read_json, read_jsonl
    from robustlab.sweep import expand_study, run_sweep, trial_dir

    result = {"machine": {"processor": platform.processor(), "platform": platform.platform(),
                          "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
                          "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA")},
              "epochs": epochs, "studies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in studies:
            raw, base_dir = _study_raw(name)
            raw = {**raw, "overrides": {**(raw.get("overrides") or {}), "train.epochs": epochs}}
            study = expand_study(raw, base_dir, source=name)
            folder = Path(tmp) / study.name
            run_sweep(study, folder, workers=workers, log=lambda s: print(s, file=sys.stderr))
            trials = {}
            for t in study.trials:
                run = trial_dir(folder, t.name)
                res = read_json(run / "results.json")
                trials[t.name] = {"status": res["status"], "metrics": _strip(read_jsonl(run / "metrics.jsonl")),
                                  "final_eval": _strip(res.get("final_eval", {}))}
            result["studies"][study.name] = trials
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"recorded {sum(len(t) for t in result['studies'].values())} trials -> {out}")


def _diff(a, b, where: str, out: list[str], new: set[str]) -> None:
    """Differences of ``b`` (after) from ``a`` (before); keys only in ``b`` are new figures, collected in ``new``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{where}.{k}: only in before")
            elif k not in a:
                new.add(k)
            else:
                _diff(a[k], b[k], f"{where}.{k}", out, new)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (u, v) in enumerate(zip(a, b)):
            _diff(u, v, f"{where}[{i}]", out, new)
    elif a != b:
        out.append(f"{where}: {a!r} != {b!r}")


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    diffs: list[str] = []
    new: set[str] = set()
    _diff(a["studies"], b["studies"], "", diffs, new)
    n = sum(len(t) for t in a["studies"].values())
    if diffs:
        print(f"{len(diffs)} differences over {n} trials:")
        print("\n".join(diffs[:50]))
        return 1
    print(f"bit-identical: {n} trials, {a['epochs']} epochs each (machine {a['machine']})"
          + (f"; figures added after: {', '.join(sorted(new))}" if new else ""))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--epochs", type=int, default=4)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--study", nargs="*", default=DEFAULT_STUDIES)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = p.parse_args()
    if args.cmd == "record":
        record(args.out, args.study, args.epochs, args.workers)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
