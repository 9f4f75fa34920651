"""The study table: one row per trial with its varying keys, status, final metrics and seconds."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from robustlab.core.io import read_json, read_jsonl, write_text
from robustlab.core.layout import load_manifest, trial_dir
from robustlab.diagnostics import collapse_verdict_in_metrics, linearity_lead, robust_overfitting

METRIC_COLUMNS = ["test_clean_acc", "test_pgd_acc", "test_fgsm_acc", "val_clean_acc", "val_pgd_acc",
                  "trainset_clean_acc", "trainset_pgd_acc"]
# robust overfitting (the monitor's per-epoch PGD curve: best, its epoch, last, best - last) and gradient instability
OVERFITTING_COLUMNS = ["best_pgd", "best_pgd_epoch", "last_pgd", "pgd_gap", "grad_norm_sq_max"]


def study_rows(study_dir: Path) -> tuple[list[str], list[dict]]:
    study_dir = Path(study_dir)
    manifest = load_manifest(study_dir)
    keys = manifest["keys"]
    study_eval = read_json(study_dir / "study_eval.json") if (study_dir / "study_eval.json").is_file() else None
    seed_column = [] if "seed" in keys else ["seed"]     # pairs runs across labels (robustlab.report.claims)
    header = ["trial", *keys, *seed_column, "status", "epochs", *METRIC_COLUMNS, "best_epoch", *OVERFITTING_COLUMNS, "final_protocol",
              "final_clean_acc", "final_robust_acc", "final_best_robust_acc", *FACT_COLUMNS, "train_seconds", "message"]
    rows = []
    for t in manifest["trials"]:
        run = trial_dir(study_dir, t["name"])
        res = read_json(run / "results.json") if (run / "results.json").is_file() else {"status": "pending"}
        metrics = read_jsonl(run / "metrics.jsonl")
        last = metrics[-1] if metrics else {}
        fe = res.get("final_eval") or {}
        row = {"trial": t["name"], **{k: t["overrides"].get(k) for k in keys},
               **{c: (t.get("config") or {}).get("seed") for c in seed_column}, "status": res.get("status"),
               "epochs": len(metrics), **{m: last.get(m) for m in METRIC_COLUMNS}, "best_epoch": res.get("best_epoch"),
               "final_protocol": fe.get("protocol"), "final_clean_acc": (fe.get("last") or {}).get("clean_acc"),
               "final_robust_acc": (fe.get("last") or {}).get("robust_acc"),
               "final_best_robust_acc": (fe.get("best") or {}).get("robust_acc"),
               "train_seconds": res.get("train_seconds"), "message": res.get("message", "")}
        ro = res.get("robust_overfitting") or robust_overfitting(metrics)
        row.update({"best_pgd": ro.get("best"), "best_pgd_epoch": ro.get("best_epoch"), "last_pgd": ro.get("last"),
                    "pgd_gap": ro.get("gap"),
                    "grad_norm_sq_max": max((m["grad_norm_sq_max"] for m in metrics if m.get("grad_norm_sq_max") is not None),
                                            default=None)})
        row.update(_run_facts(run, metrics))
        row.update(_eval_columns(study_eval, t["name"], run))
        for key, evaluation in _evaluations(study_eval).items():
            row.update({keyed_column(key, c): v
                        for c, v in _eval_columns(evaluation, t["name"], run).items() if c in KEYED_EVAL_COLUMNS})
        rows.append(row)
    if study_eval:
        keyed = [keyed_column(key, c) for key in _evaluations(study_eval) for c in KEYED_EVAL_COLUMNS]
        header = header[:-2] + EVAL_COLUMNS + keyed + header[-2:]
    return header, rows


FACT_COLUMNS = ["collapse", "collapse_epoch", "peak_clean_acc", "lost_epoch", "elle_rise_epoch", "linearity_lead",
                "kernel_path", "cpu"]


def study_claims(study_dir: Path, rows: list[dict] | None = None) -> list[dict]:
    """The study's claims (its manifest's) counted on its trials' rows (``rows``: :func:`study_rows`'s, when the
    caller has them; :func:`robustlab.report.claims.evaluate_claims`); [] for a study without claims."""
    from robustlab.report.claims import evaluate_claims, parse_claims
    raw = load_manifest(Path(study_dir)).get("claims")
    if not raw:
        return []
    return evaluate_claims(parse_claims(raw), study_rows(study_dir)[1] if rows is None else rows)


def _run_facts(run: Path, metrics: list[dict]) -> dict:
    """The collapse verdict (robustlab.diagnostics.collapse_verdict: co, failure, none), the best clean accuracy of
    any epoch, the epoch robustness was lost to ~0 and the local-linearity warning before it
    (robustlab.diagnostics.linearity_lead), and what the run ran on: its CPU kernel path (torch's dispatch level, e.g. AVX2, DEFAULT) and CPU."""
    verdict, epoch = collapse_verdict_in_metrics(metrics)
    clean = [m["test_clean_acc"] for m in metrics if m.get("test_clean_acc") is not None]
    env = read_json(run / "env.json") if (run / "env.json").is_file() else {}
    path = (env.get("kernel_path") or {}).get("cpu_capability")
    return {"collapse": verdict if metrics else None, "collapse_epoch": epoch, "peak_clean_acc": max(clean, default=None),
            **linearity_lead(metrics), "kernel_path": path, "cpu": env.get("cpu_model") or env.get("processor") or None}


EVAL_COLUMNS = ["eval_protocol", "eval_best_clean_acc", "eval_best_robust_acc", "eval_last_clean_acc",
                "eval_last_robust_acc", "eval_flags"]


KEYED_EVAL_COLUMNS = ["eval_best_clean_acc", "eval_best_robust_acc", "eval_last_clean_acc", "eval_last_robust_acc"]


def keyed_column(key: str, column: str) -> str:
    """``eval_last_robust_acc`` of evaluation ``pgd_50_10_n500`` -> ``eval_pgd_50_10_n500_last_robust_acc``."""
    return f"eval_{key}_{column[len('eval_'):]}"


def _evaluations(study_eval: dict | None) -> dict:
    """Every evaluation ``robustlab eval STUDY_DIR`` recorded, by key (robustlab.eval.study.evaluation_key)."""
    return (study_eval or {}).get("evaluations") or {}


def _eval_columns(study_eval: dict | None, name: str, run: Path) -> dict:
    """The figures of one ``robustlab eval STUDY_DIR`` evaluation for one trial (study_eval.json, or one of its
    ``evaluations``, names the files) as ``eval_*`` columns; study_rows adds every recorded one under
    :func:`keyed_column` names."""
    if not study_eval:
        return {}
    row = {c: None for c in EVAL_COLUMNS}
    row["eval_protocol"] = study_eval.get("protocol")
    flags = set()
    for which, rel in study_eval.get("files", {}).get(name, {}).items():
        if (run / rel).is_file():
            res = read_json(run / rel)
            row[f"eval_{which}_clean_acc"], row[f"eval_{which}_robust_acc"] = res["clean_acc"], res["robust_acc"]
            flags |= {f"{which}:{f['check']}" for f in res.get("sanity", []) if not f["passed"]}
    row["eval_flags"] = " ".join(sorted(flags))
    return row


def write_study_table(study_dir: Path) -> Path:
    header, rows = study_rows(study_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    path = Path(study_dir) / "table.csv"
    write_text(path, buf.getvalue())
    return path
