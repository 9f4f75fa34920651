"""``robustlab eval STUDY_DIR``: evaluate every trial's best and last checkpoints with the same protocol and
add the figures to the study table (``eval_*`` columns) and report.

Each evaluation is an ordinary ``robustlab eval`` of a run folder (its JSON, Markdown and resumable state in
``TRIAL/eval/``), so an interrupted study evaluation resumes trial by trial and chunk by chunk.
``STUDY/study_eval.json`` records the protocol and which files belong to it.
"""
from __future__ import annotations

import copy
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.io import write_json
from robustlab.core.layout import is_study_dir, load_manifest  # noqa: F401  (is_study_dir: used by the CLI)
from robustlab.core.layout import trial_dir

CHECKPOINTS = ("best", "last")


def eval_study(args, log=print) -> dict:
    from robustlab.eval.command import run_eval
    from robustlab.report.study import write_study_report
    from robustlab.report.table import write_study_table
    if args.out:
        raise ConfigError("--out: a study is evaluated into each trial's eval/ folder; drop --out")
    study_dir = Path(args.path)
    manifest = load_manifest(study_dir)
    files, protocol = {}, None
    for t in manifest["trials"]:
        run = trial_dir(study_dir, t["name"])
        for which in CHECKPOINTS:
            if not (run / "checkpoints" / f"{which}.pt").is_file():
                log(f"{t['name']}: no {which} checkpoint; skipped")
                continue
            a = copy.copy(args)
            a.path, a.checkpoint = str(run), which
            res = run_eval(a, log=lambda s: None)
            protocol = res["protocol"]
            files.setdefault(t["name"], {})[which] = str(Path(res["written_to"]).relative_to(run))
            flags = [f["check"] for f in res["sanity"] if not f["passed"]]
            log(f"{t['name']} [{which}]: clean {res['clean_acc']:.4f} robust {res['robust_acc']:.4f}"
                + (f"  FLAGS: {', '.join(flags)}" if flags else ""))
    summary = {"protocol": protocol, "threat_model": args.norm, "eps": args.eps, "n": args.n, "files": files}
    write_json(study_dir / "study_eval.json", summary)
    write_study_table(study_dir)
    summary["report"] = str(write_study_report(study_dir) / "report.html")
    return summary
