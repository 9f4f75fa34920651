"""``robustlab eval STUDY_DIR``: evaluate every trial's best and last checkpoints (or only ``--checkpoint``'s) with
the same protocol and add the figures to the study table and report.

Each evaluation is an ordinary ``robustlab eval`` of a run folder (its JSON, Markdown and resumable state in
``TRIAL/eval/``), so an interrupted study evaluation resumes trial by trial and chunk by chunk.
``STUDY/study_eval.json`` records, per evaluation (protocol and number of points, :func:`evaluation_key`), the
protocol and which files belong to it; its top level is the latest evaluation. A study evaluated twice, e.g. by
PGD-50-10 on 500 points and by PGD-50-10 + AutoAttack on 100 of them, keeps both: the table has the latest one's
``eval_*`` columns and ``eval_<key>_*`` columns for every one.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.io import read_json, write_json
from robustlab.core.layout import is_study_dir, load_manifest  # noqa: F401  (is_study_dir: used by the CLI)
from robustlab.core.layout import DONE, trial_dir, trial_status
from robustlab.core.locks import claim, hold, study_locks

CHECKPOINTS = ("best", "last")


def requested_checkpoints(req) -> tuple[str, ...]:
    """The checkpoints an EvalRequest evaluates: its ``checkpoint``, or best and last."""
    return (req.checkpoint,) if req.checkpoint else CHECKPOINTS


def evaluation_key(protocol: str, n: int) -> str:
    """The column-safe name of one study evaluation: ``PGD-50-10+AutoAttack`` on 100 points -> ``pgd_50_10_autoattack_n100``."""
    return re.sub(r"[^a-z0-9]+", "_", str(protocol).lower()).strip("_") + f"_n{n}"


def request_protocol(req) -> str:
    """The protocol name an EvalRequest's figures are recorded under ("PGD-50-10+AutoAttack"), known before it
    runs: it depends on the protocol's settings, not on eps or the norm."""
    from robustlab.eval.library import protocol_config
    from robustlab.protocols import EVAL_ATTACKS, protocol_name
    return protocol_name(EVAL_ATTACKS.build(protocol_config(req.attack)).stages(8 / 255, req.norm or "linf"))


def evaluation_status_lines(study_dir) -> list[str]:
    """For ``robustlab status``: per evaluation the study file asks for (``evaluations:``), how many of the ended
    trials have its figures; a trial counts once every checkpoint the request names that the trial has is
    recorded. Reads the folder, writes nothing."""
    from robustlab.eval.command import study_requests
    study_dir = Path(study_dir)
    manifest = load_manifest(study_dir)
    entries = manifest.get("evaluations") or []
    if not entries:
        return []
    ended = [t["name"] for t in manifest["trials"] if trial_status(study_dir, t["name"]) in DONE]
    path = study_dir / "study_eval.json"
    records = (read_json(path).get("evaluations") or {}) if path.is_file() else {}
    lines = []
    for req, _ in study_requests(entries):
        protocol = request_protocol(req)
        files = (records.get(evaluation_key(protocol, req.n)) or {}).get("files") or {}
        wanted = requested_checkpoints(req)
        done = sum(all(c in files.get(name, {}) or not (trial_dir(study_dir, name) / "checkpoints" / f"{c}.pt").is_file()
                       for c in wanted) for name in ended)
        line = (f"evaluation {protocol} on {req.n} points, checkpoint {req.checkpoint or 'best and last'}: "
                f"{done} of {len(ended)} ended trials")
        if done < len(ended):
            line += f"; {len(ended) - done} to do (the sweep runs them after its trials; or robustlab eval)"
        lines.append(line)
    return lines


def not_ended_line(not_ended: dict[str, list[str]]) -> str:
    """One line for the trials a study evaluation skipped, by status: pending ones counted, the others (running,
    interrupted, failed: the few a user may want to look at) named."""
    parts = [f"{len(names)} {status}" + ("" if status == "pending" else f" ({', '.join(names)})")
             for status, names in sorted(not_ended.items())]
    n = sum(len(names) for names in not_ended.values())
    return (f"skipped {n} trial(s) not ended: {'; '.join(parts)} (evaluate again once they have ended: "
            "their checkpoints are not their results)")


def evaluate_trial(req, run: Path, log):
    """Yield (checkpoint, result) for each of ``req``'s checkpoints (best and last by default) that the trial has."""
    from robustlab.eval.command import run_eval
    for which in requested_checkpoints(req):
        if not (run / "checkpoints" / f"{which}.pt").is_file():
            log(f"{run.name}: no {which} checkpoint; skipped")
            continue
        res = run_eval(dataclasses.replace(req, path=str(run), checkpoint=which), log=lambda s: None)
        flags = [f["check"] for f in res["sanity"] if not f["passed"]]
        log(f"{run.name} [{which}]: clean {res['clean_acc']:.4f} robust {res['robust_acc']:.4f}"
            + (f"  FLAGS: {', '.join(flags)}" if flags else ""))
        yield which, res


def eval_study(req, log=print, report: bool = True) -> dict:
    """Every ended trial's (finished or diverged) best and last checkpoints (or ``req.checkpoint``'s) evaluated as
    ``req`` (an EvalRequest) asks; trials still pending, running, interrupted or failed are skipped, so a claim study
    run over several sessions can be evaluated as its runs end. ``report``: then write the study's table and report
    (:func:`write_table_and_report`; off where the caller writes them once for several evaluations)."""
    if req.out:
        raise ConfigError("--out: a study is evaluated into each trial's eval/ folder; drop --out")
    study_dir = Path(req.path)
    manifest = load_manifest(study_dir)
    files, protocol, not_ended, busy = {}, None, {}, []
    for t in manifest["trials"]:
        status = trial_status(study_dir, t["name"])
        if status not in DONE:      # a running or interrupted run's checkpoints are not its result
            not_ended.setdefault(status, []).append(t["name"])
            continue
        with claim(study_locks(study_dir), t["name"]) as mine:   # two sweeps ending together share the work
            if not mine:
                busy.append(t["name"])
                continue
            run = trial_dir(study_dir, t["name"])
            for which, res in evaluate_trial(req, run, log):
                protocol = res["protocol"]
                files.setdefault(t["name"], {})[which] = str(Path(res["written_to"]).relative_to(run))
    if not_ended:
        log(not_ended_line(not_ended))
    if busy:
        log(f"left {len(busy)} trial(s) to the process that holds them (evaluating them now): {', '.join(busy)}")
    summary = {"protocol": protocol, "threat_model": req.norm, "eps": req.eps, "n": req.n, "files": files}
    path = study_dir / "study_eval.json"
    with hold(study_locks(study_dir), "study_eval"):      # read-modify-write: another process may write it too
        evaluations = (read_json(path).get("evaluations") or {}) if path.is_file() else {}
        if protocol is not None:
            key = evaluation_key(protocol, req.n)
            kept = (evaluations.get(key) or {}).get("files") or {}
            summary["files"] = {**kept, **{name: {**kept.get(name, {}), **which} for name, which in files.items()}}
            evaluations[key] = dict(summary)
        if protocol is not None or not path.is_file():    # a process that evaluated nothing (every trial held by
            write_json(path, {**summary, "evaluations": evaluations})   # another) leaves the latest record as it is
    if report:
        summary["report"] = write_table_and_report(study_dir)
    return summary


def write_table_and_report(study_dir: Path) -> str:
    """The study's table.csv and report, with every evaluation recorded so far; the report's path."""
    from robustlab.report.study import write_study_report
    from robustlab.report.table import write_study_table
    write_study_table(Path(study_dir))
    return str(write_study_report(Path(study_dir)) / "report.html")


def eval_study_in_processes(req, workers: int, threads: int = 0, log=print, report: bool = True) -> dict:
    """:func:`eval_study` in ``workers`` processes at once, each with ``threads`` torch threads (0: torch's default):
    each process claims a trial before it evaluates it (:func:`robustlab.core.locks.claim`), so they split the
    trials between them, and each merges what it evaluated into ``study_eval.json`` under the study's lock; the table
    and report are written once, when all have ended (``report``). Their lines go to stdout, each with its process
    number (``log`` serves the one-process case). Returns the merged summary (``files`` of every process)."""
    if workers <= 1:
        summaries = [_eval_study_child((req, threads, None, log))]
    else:
        import concurrent.futures
        import multiprocessing
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            summaries = list(pool.map(_eval_study_child, [(req, threads, i, None) for i in range(workers)]))
    done = [s for s in summaries if s["protocol"] is not None] or summaries
    merged = dict(done[-1])
    merged["files"] = {name: which for s in summaries for name, which in s["files"].items()}
    if report:
        merged["report"] = write_table_and_report(Path(req.path))
    return merged


def _eval_study_child(job) -> dict:
    """One process of :func:`eval_study_in_processes` (``log`` None: its lines carry its number, ``[eval 1] ...``)."""
    from robustlab.core.runtime import set_threads
    req, threads, index, log = job
    set_threads(threads)
    if log is None:
        def log(line):
            print(f"[eval {index + 1}] {line}", flush=True)
    return eval_study(req, log=log, report=False)


def run_study_evaluations(study_dir, workers: int = 1, *, requests, log=print) -> None:
    """A study file's evaluations (``(EvalRequest, threads)`` pairs, robustlab.eval.command.study_requests), each over
    every ended trial, in ``workers`` processes (:func:`eval_study_in_processes`); what ``robustlab sweep`` runs after
    the trials, with its worker count, before it writes the table and report itself."""
    for req, threads in requests:
        log(f"evaluation: {req.attack['name']} on {req.n} points, checkpoint {req.checkpoint or 'best and last'}"
            + (f", {workers} processes" if workers > 1 else ""))
        eval_study_in_processes(dataclasses.replace(req, path=str(study_dir)), workers, threads, log=log, report=False)
