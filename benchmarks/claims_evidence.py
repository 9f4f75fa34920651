"""Recorded evidence for the claims of README and docs, and the text made from it (robustlab.report.evidence).

    python benchmarks/claims_evidence.py record NAME STUDY_DIR [STUDY_DIR ...]  # docs/evidence/NAME.csv + .claims.yaml
        [--claims STUDY.yaml]    # the claims of this study file instead of the first folder's (e.g. per-seed runs)
        [--merge]                # keep the rows already recorded under NAME that these folders do not replace
                                 # (a claim study run over several sessions, each on a fresh machine)
    python benchmarks/claims_evidence.py render     # rewrite the evidence blocks of README.md and docs/*.md
    python benchmarks/claims_evidence.py check      # exit 1 when a block differs from what render would write
    python benchmarks/claims_evidence.py report STUDY_DIR [...]   # which claims hold in these folders (nothing written)

``record`` takes the claims from the first study's manifest (its ``claims:``), or from ``--claims`` (a study file,
parsed and validated); every study's runs go into one table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from robustlab.core.io import read_json, write_text  # noqa: E402
from robustlab.report.claims import claim_lines, evaluate_claims, parse_claims  # noqa: E402
from robustlab.report.evidence import read_csv, render_blocks, study_evidence, write_csv  # noqa: E402

EVIDENCE = ROOT / "docs" / "evidence"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def load(name: str, folder: Path = EVIDENCE):
    rows = read_csv((folder / f"{name}.csv").read_text())
    claims_file = folder / f"{name}.claims.yaml"
    claims = parse_claims(yaml.safe_load(claims_file.read_text())) if claims_file.is_file() else []
    return claims, rows


ENDED = ("finished", "diverged")


def run_key(row: dict) -> tuple:
    """One run of a claim study: its study, trial and CPU kernel path (the same trial on another path is another run)."""
    return row.get("study"), row.get("trial"), row.get("kernel_path")


def merged(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows in their order, each replaced by the new row of the same run unless that one has not ended while
    the old one had; then the new runs not recorded before. An old row of a run that had not started (no kernel path
    yet) is replaced by the new rows of its trial on any path; a new row of a run that has not started is dropped
    where its trial was recorded before (a fresh machine's study folder lacks the runs of earlier sessions)."""
    fresh = {run_key(r): r for r in new}
    by_trial: dict[tuple, list[tuple]] = {}
    for r in new:
        by_trial.setdefault((r.get("study"), r.get("trial")), []).append(run_key(r))
    out = []
    for r in old:
        if not r.get("kernel_path") and r.get("status") not in ENDED:
            started = [k for k in by_trial.get((r.get("study"), r.get("trial")), []) if k[2] and k in fresh]
            if started:
                out += [fresh.pop(k) for k in started]
                continue
        n = fresh.pop(run_key(r), None)
        out.append(r if n is None or (n.get("status") not in ENDED and r.get("status") in ENDED) else n)
    recorded = {(r.get("study"), r.get("trial")) for r in old}
    return out + [r for r in new if run_key(r) in fresh
                  and (r.get("kernel_path") or (r.get("study"), r.get("trial")) not in recorded)]


def record(name: str, study_dirs: list[str], claims_from: str | None = None, merge: bool = False) -> None:
    rows = [r for d in study_dirs for r in study_evidence(Path(d))]
    if merge and (EVIDENCE / f"{name}.csv").is_file():
        rows = merged(load(name)[1], rows)
    if claims_from:
        from robustlab.sweep import load_study
        claims = load_study(claims_from).claims or []
    else:
        claims = read_json(Path(study_dirs[0]) / "study.json").get("claims") or []
    EVIDENCE.mkdir(parents=True, exist_ok=True)
    write_text(EVIDENCE / f"{name}.csv", write_csv(rows))
    write_text(EVIDENCE / f"{name}.claims.yaml", yaml.safe_dump(claims, sort_keys=False, allow_unicode=True))
    print(f"{EVIDENCE / name}.csv: {len(rows)} runs")
    for line in claim_lines(evaluate_claims(parse_claims(claims), rows)):
        print(line)


def render(check: bool) -> int:
    stale, missing = [], set()

    def load_or_keep(name):
        if not (EVIDENCE / f"{name}.csv").is_file():
            missing.add(name)
            return None
        return load(name)
    for doc in DOCUMENTS:
        text = doc.read_text()
        new = render_blocks(text, load_or_keep)
        if new != text:
            stale.append(doc)
            if not check:
                write_text(doc, new)
    for doc in stale:
        print(f"{doc.relative_to(ROOT)}: {'differs from its evidence' if check else 'rewritten'}")
    for name in sorted(missing):
        print(f"docs/evidence/{name}.csv: missing (its blocks were left as they are)")
    return 1 if (check and (stale or missing)) else 0


def report(study_dirs: list[str]) -> int:
    rows = [r for d in study_dirs for r in study_evidence(Path(d))]
    claims = parse_claims(read_json(Path(study_dirs[0]) / "study.json").get("claims") or [])
    results = evaluate_claims(claims, rows)
    for line in claim_lines(results):
        print(line)
    return 0 if all(r["holds"] for r in results) else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("name")
    r.add_argument("studies", nargs="+")
    r.add_argument("--claims", default=None, help="a study file whose claims: to record (default: the first folder's)")
    r.add_argument("--merge", action="store_true", help="keep the runs already recorded under NAME that these folders "
                   "do not hold")
    sub.add_parser("render")
    sub.add_parser("check")
    rep = sub.add_parser("report")
    rep.add_argument("studies", nargs="+")
    args = p.parse_args(argv)
    if args.cmd == "record":
        record(args.name, args.studies, args.claims, args.merge)
        return 0
    if args.cmd == "report":
        return report(args.studies)
    return render(check=args.cmd == "check")


if __name__ == "__main__":
    sys.exit(main())
