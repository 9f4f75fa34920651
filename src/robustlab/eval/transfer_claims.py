"""What a transfer study must show, counted as a study's claims are (robustlab.report.claims): each surrogate is a
row with its label, seed, kernel path and figures, and a claim compares the rows of two labels paired by seed and
kernel path::

    claims:
      - says: "SAM surrogates transfer better than fully trained SGD ones"
        group: SAM@30
        versus: [SGD@30]
        above: [success_BIM_all]      # mean success over the targets, denominator: all selected examples
        at_least: 0.8

Columns per surrogate: ``success_<attack>_all`` and ``success_<attack>_correct`` (the mean over targets of each
denominator) and, when measured, ``hessian_top_eig`` and ``hessian_trace``. Targets whose clean accuracy on the test
split is below the study's ``min_target_accuracy`` are flagged: a weak target makes every surrogate look strong.

Does sharpness predict transfer? Per seed and kernel path, the surrogates of that seed (every label, every kept
epoch) form one row labelled ``sharpness vs transfer`` with Spearman's rho (robustlab.report.rank) between each
sharpness measure and each attack's success (denominator: all): ``rank_<attack>_top_eig``, ``rank_<attack>_trace``
and ``n`` (surrogates with both figures). A claim counts these rows like runs::

      - says: "flatter surrogates transfer better: rho(top eigenvalue, BIM success) <= -0.5 for each seed"
        group: sharpness vs transfer
        metric: rank_BIM_top_eig
        max: -0.5
"""
from __future__ import annotations

import math
from pathlib import Path

from robustlab.core.io import read_json
from robustlab.report.claims import Claim, evaluate_claims
from robustlab.report.rank import permutation_p, spearman
from robustlab.report.transfer import mean_finite


def run_facts(source: dict) -> dict:
    """Seed and kernel path of a surrogate that is a robustlab run (from its env.json); {} for other models."""
    run = source.get("run")
    if not run:
        return {}
    env_path = Path(str(run).split("@")[0]) / "env.json"
    env = read_json(env_path) if env_path.is_file() else {}
    return {"seed": env.get("seed"), "kernel_path": (env.get("kernel_path") or {}).get("cpu_capability")}


def surrogate_rows(surrogates: list[dict], matrices: dict, sharpness: dict) -> list[dict]:
    """One row per surrogate: key, label, seed, kernel path, status, its mean success per attack and denominator,
    its sharpness."""
    rows = []
    for i, s in enumerate(surrogates):
        row = {"key": s["key"], "label": s["label"], "status": "finished", **run_facts(s["source"])}
        for attack, m in matrices.items():
            row[f"success_{attack}_all"] = mean_finite(m["success_all"][i])
            row[f"success_{attack}_correct"] = mean_finite(m["success_correct"][i])
        row.update(sharpness.get(s["key"], {}))
        rows.append(row)
    return rows


RANK_LABEL = "sharpness vs transfer"
SHARPNESS_MEASURES = {"top_eig": "hessian_top_eig", "trace": "hessian_trace"}


def _rank_figures(rows: list[dict], attacks, with_p: bool = False) -> dict:
    out: dict = {}
    for attack in attacks:
        for short, measure in SHARPNESS_MEASURES.items():
            pairs = [(r[measure], r[f"success_{attack}_all"]) for r in rows
                     if _finite(r.get(measure)) and _finite(r.get(f"success_{attack}_all"))]
            xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
            out[f"rank_{attack}_{short}"] = spearman(xs, ys) if len(pairs) >= 3 else math.nan
            out[f"n_{attack}_{short}"] = len(pairs)
            if with_p:
                out[f"p_{attack}_{short}"] = permutation_p(xs, ys) if len(pairs) >= 3 else math.nan
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)


def rank_rows(rows: list[dict], attacks) -> list[dict]:
    """One ``sharpness vs transfer`` row per (seed, kernel path) with at least 3 surrogates: Spearman's rho of each
    sharpness measure against each attack's success over that seed's surrogates, and their count."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("seed") is not None:
            groups.setdefault((r["seed"], r.get("kernel_path")), []).append(r)
    return [{"key": f"rank-seed{seed}-{path}", "label": RANK_LABEL, "seed": seed, "kernel_path": path,
             "status": "finished", "surrogates": len(group), **_rank_figures(group, attacks)}
            for (seed, path), group in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
            if len(group) >= 3]


def pooled_rank(rows: list[dict], attacks) -> dict:
    """Spearman's rho over all surrogates together, with n and a permutation p-value (robustlab.report.rank)."""
    return _rank_figures(rows, attacks, with_p=True)


def transfer_claims(claims: list[Claim], rows: list[dict]) -> list[dict]:
    """The claims evaluated on the surrogate rows, as JSON-ready records."""
    return [{"says": r["claim"].says, "group": r["claim"].group, "holds": r["holds"], "met": r["met"], "runs": r["runs"],
             "paths": {p: list(v) for p, v in r["paths"].items()}, "pending": r["pending"], "rule": r["claim"].rule()}
            for r in evaluate_claims(claims, rows)]


def weak_targets(targets: list[dict], accuracy: dict, minimum: float) -> list[str]:
    """Lines naming the targets below ``minimum`` clean accuracy."""
    return [f"target {t['key']} ({t['label']}) has {100 * accuracy[t['key']]:.1f} % clean accuracy on the test split, "
            f"below the study's min_target_accuracy {100 * minimum:.0f} %: a weak target inflates transfer success"
            for t in targets if t["key"] in accuracy and accuracy[t["key"]] < minimum]
