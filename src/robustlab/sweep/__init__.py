"""Studies: declarative sweeps over config keys, run locally or on Ray, with a results table and report.

``run_sweep(study_file, out)`` expands the study, records the expansion in ``OUT/study.json`` (a rerun of
a different study into the same folder is refused), runs every trial that is not finished (interrupted
ones resume from their checkpoints), then writes ``OUT/table.csv`` and ``OUT/report/``.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from robustlab.core.errors import ConfigError
from robustlab.core.io import read_json, write_json
from robustlab.core.outputs import check_out_folder
from robustlab.sweep.deadline import StartDeadline, describe_deadline, parse_deadline
from robustlab.sweep.estimate import share_left
from robustlab.sweep.study import Study, Trial, expand_study, load_study, select_trials
from robustlab.report.table import study_claims, study_rows, write_study_table
from robustlab.core.layout import DONE, trial_dir, trial_status
from robustlab.sweep.trial import run_trial

BACKENDS = ("local", "ray")


MULTI_STEP = ("pgd", "trades", "mart", "arat")   # methods whose training attack runs ``method.steps`` iterations


def trial_cost(config: dict) -> float:
    """A rough relative cost, to start the longest trials first: epochs x forward-backward passes per batch (the
    attack's steps + 1; regularisers and sharpness-aware minimisers count as one more pass each) x training images
    (``data.train_size`` or ``data.train_per_class``; the whole set, the largest, when neither is given)."""
    m, data = config["method"], config.get("data", {})
    passes = 1 + (m.get("steps", 1) if m["name"] in MULTI_STEP else 0 if m["name"] == "standard" else 1)
    minimizer = (config.get("optim", {}).get("minimizer") or {}).get("name", "plain")
    passes += len(m.get("regularizers") or []) + (minimizer != "plain")
    images = data.get("train_size") or 10 * (data.get("train_per_class") or 0) or 10 ** 9
    return config["train"]["epochs"] * passes * images


def cost_left(study_dir: Path, trial: Trial) -> float:
    """:func:`trial_cost` times the share of the trial's epochs still to run (a trial resumed near its end is cheap)."""
    return trial_cost(trial.config) * share_left(trial_dir(study_dir, trial.name), int(trial.config["train"]["epochs"]))


def run_order(study_dir: Path, trials: list[Trial]) -> list[Trial]:
    """The trials still to run, the most expensive first (what is left of them: :func:`cost_left`), so that workers
    finish together. Finished and diverged trials are done (a diverged run would replay its last epoch and diverge
    again); failed, interrupted and pending ones run."""
    return sorted((t for t in trials if trial_status(study_dir, t.name) not in DONE), key=lambda t: -cost_left(study_dir, t))


def same_trials(old: dict, study: Study) -> bool:
    """The stored manifest's trials are this study's: same names and overrides, and configs that resolve the same
    today (a folder written by an earlier robustlab lacks the config keys added since, with their defaults)."""
    from robustlab.config import config_from_dict
    stored = old.get("trials") or []
    if [(t.get("name"), t.get("overrides")) for t in stored] != [(t.name, t.overrides) for t in study.trials]:
        return False
    try:
        return all(config_from_dict(s["config"]).to_dict() == t.config for s, t in zip(stored, study.trials))
    except ConfigError:
        return False


def prepare_study_dir(study: Study, out: Path) -> None:
    manifest = out / "study.json"
    if manifest.is_file():
        old = read_json(manifest)
        if old.get("fingerprint") != study.fingerprint():
            if not same_trials(old, study):
                raise ConfigError(f"{out}: holds a different study (its trials or configs differ); choose another --out")
            write_json(manifest, study.to_dict())     # written by an earlier robustlab: the same trials, keys added since
            return
        if (old.get("claims"), old.get("evaluations") or []) != (study.claims, study.evaluations):
            # the trials are the same; what they must show, or how they are evaluated, was edited
            write_json(manifest, study.to_dict())
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(manifest, study.to_dict())
    if study.source and Path(study.source).is_file():
        shutil.copyfile(study.source, out / "study.yaml")


def run_sweep(study: Study | str | Path, out: str | Path | None = None, workers: int | None = None,
              backend: str = "local", address: str | None = None, log: Callable[[str], None] = print,
              command: list[str] | None = None, select: list[str] | None = None, deadline: str | None = None,
              evaluate: Callable[[Path, int], None] | None = None) -> dict:
    """``command``: the user's command line, recorded in every trial's env.json (default: this process's argv);
    ``select``: run only the trials ``KEY=VALUE`` selects (:func:`robustlab.sweep.study.select_trials`);
    ``deadline``: start no trial that cannot end before it (local backend; :mod:`robustlab.sweep.deadline`);
    ``evaluate(study_dir, workers)``: runs the study's ``evaluations:`` after the trials, in the sweep's number of
    processes, before the table, report and claims (the CLI passes robustlab.eval.study.run_study_evaluations with the
    file's requests; without it they are not run)."""
    import sys
    from robustlab.sweep.executors import run_local
    from robustlab.sweep.ray_executor import run_ray

    command = command or sys.argv

    if backend not in BACKENDS:
        raise ConfigError(f"--backend: got {backend!r}; allowed: {', '.join(BACKENDS)}")
    if not isinstance(study, Study):
        study = load_study(study)
    out = Path(out) if out else Path("runs") / "studies" / study.name
    workers = study.workers if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers: got {workers}; must be >= 1")
    if address is not None and backend != "ray":
        raise ConfigError(f"--address: goes with --backend ray (got --backend {backend})")
    if deadline is not None and backend != "local":
        raise ConfigError(f"--deadline: works with --backend local only (got --backend {backend}: Ray queues every "
                          "trial at once)")
    end = parse_deadline(deadline) if deadline is not None else None
    check_out_folder(out, "--out", "study", "study.json")
    chosen = select_trials(study, select) if select else study.trials
    prepare_study_dir(study, out)
    todo = run_order(out, chosen)
    log(f"robustlab sweep {study.name}: {len(study.trials)} trials" + (f", {len(chosen)} selected" if select else "")
        + f", {len(chosen) - len(todo)} done (finished or diverged), "
        f"{len(todo)} to run on {backend} with {workers} worker(s); folder {out}"
        + (f"; no trial starts that cannot end by {describe_deadline(end)}" if end is not None else ""))
    t0 = time.perf_counter()
    if todo:
        if backend == "local":
            hold = StartDeadline(out, study.trials, end).hold if end is not None else None
            outcomes = run_local(out, todo, workers, log, command, hold)
        else:
            outcomes = run_ray(out, study, todo, address, workers, log, command)
    else:
        outcomes = []
    if evaluate is not None:
        evaluate(out, workers)
    write_study_table(out)
    from robustlab.report.study import write_study_report
    report = write_study_report(out)
    statuses = [trial_status(out, t.name) for t in study.trials]
    summary = {"study": study.name, "folder": str(out), "trials": len(study.trials),
               "finished": statuses.count("finished"), "diverged": statuses.count("diverged"),
               "failed": statuses.count("failed"),
               "other": sum(s not in (*DONE, "failed") for s in statuses),
               "seconds": time.perf_counter() - t0, "report": str(report / "report.html"), "outcomes": outcomes,
               "not_started": sum(o["status"] == "not started" for o in outcomes), "selected": len(chosen),
               "selected_finished": [trial_status(out, t.name) for t in chosen].count("finished")}
    log(f"{summary['finished']}/{summary['trials']} finished, {summary['diverged']} diverged, {summary['failed']} failed, "
        f"{summary['other']} not done" + (f" ({summary['not_started']} held back by --deadline)"
                                          if summary["not_started"] else "") + "; "
        f"table {out / 'table.csv'}; report {summary['report']}")
    if study.claims:
        from robustlab.report.claims import claim_lines
        results = study_claims(out)
        summary["claims"] = [{"says": r["claim"].says, "holds": r["holds"], "met": r["met"], "runs": r["runs"],
                              "paths": r["paths"]} for r in results]
        for line in claim_lines(results):
            log("claim " + line)
    return summary


__all__ = ["BACKENDS", "Study", "Trial", "expand_study", "load_study", "run_sweep", "run_trial", "study_rows",
           "trial_dir", "write_study_table"]
