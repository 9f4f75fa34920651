import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from robustlab.config import ConfigError
from robustlab.core.io import read_jsonl
from robustlab.sweep import expand_study, load_study, run_sweep
from robustlab.core.locks import claim

from helpers import signal_at_env

TINY_BASE = {"data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
             "model": {"name": "wong_mnist"}, "method": {"name": "fgsm", "eps": 0.1},
             "train": {"epochs": 2, "progress": "none"}, "optim": {"lr": 0.1},
             "monitor": {"eval_points": 64, "attack_steps": 2}, "final_eval": {"points": 0}}


def tiny_study(**kw):
    return {"name": "tiny", "base": TINY_BASE, **kw}


def test_expansion_names_and_order():
    s = expand_study(tiny_study(grid={"method.eps": ["2/255", 0.1], "seed": [0, 1]},
                                list=[{"method.name": "fgsm"}, {"label": "PGD", "method.name": "pgd", "method.steps": 2}]))
    assert len(s.trials) == 8 and s.keys == ["label", "method.name", "method.steps", "method.eps", "seed"]
    assert s.trials[0].name == "000-name-fgsm_eps-2_255_seed-0"
    assert s.trials[5].name == "005-label-PGD_name-pgd_steps-2_eps-2_255_seed-1"
    assert s.trials[0].config["method"]["eps"] == pytest.approx(2 / 255)
    assert s.trials[7].config["method"]["steps"] == 2 and s.trials[7].config["seed"] == 1
    assert len({t.name for t in s.trials}) == 8 and s.fingerprint() == expand_study(tiny_study(
        grid={"method.eps": ["2/255", 0.1], "seed": [0, 1]},
        list=[{"method.name": "fgsm"}, {"label": "PGD", "method.name": "pgd", "method.steps": 2}])).fingerprint()


@pytest.mark.parametrize("raw,needle", [
    (tiny_study(grd={}), "study.grd: unknown key"),
    (tiny_study(grid={"method.eps": []}), "study.grid.method.eps: got []"),
    (tiny_study(grid={"method.eps": [0.1, -1]}), "study trial 001-eps--1: method.eps: got -1; must be >= 0"),
    (tiny_study(grid={"method.nope": [1]}), "method.nope: unknown key"),
    (tiny_study(grid={"seed": [0, 0]}), "same config as an earlier trial"),
    (tiny_study(resources={"tpus": 1}), "study.resources.tpus"),
    (tiny_study(workers=0), "study.workers: got 0"),
    (tiny_study(evaluations={"n": 5}), "study.evaluations: got {'n': 5}; expected a list of mappings"),
    (tiny_study(evaluations=[{"points": 5}]), "study.evaluations[0].points: unknown key; allowed: alpha, attack,"),
    (tiny_study(evaluations=[{"checkpoint": "swa"}]), "study.evaluations[0].checkpoint: got 'swa'; allowed: best, last"),
    (tiny_study(evaluations=[{}, {"attack": "apgd"}]), "study.evaluations[1].attack: got 'apgd'; allowed: autoattack, fgsm, pgd"),
    (tiny_study(evaluations=[{"n": 0}]), "study.evaluations[0].n: got 0; must be an integer >= 1"),
])
def test_study_errors(raw, needle):
    with pytest.raises(ConfigError, match=None) as info:
        expand_study(raw)
    assert needle in str(info.value)


def test_base_file_relative_to_study(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY_BASE))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"seed": [0, 1]}}))
    s = load_study(tmp_path / "s.yaml")
    assert s.name == "s" and len(s.trials) == 2 and s.trials[1].config["data"]["name"] == "synthetic"


def test_local_sweep_table_report_failure_and_rerun(tmp_path):
    raw = tiny_study(grid={"method.eps": [0.05, 0.1], "optim.lr": [0.05, 0.1]},
                     list=[{}], workers=2)
    out = tmp_path / "study"
    summary = run_sweep(expand_study(raw), out, log=lambda s: None)
    assert summary["finished"] == 4 and summary["failed"] == 0
    table = (out / "table.csv").read_text().splitlines()
    assert table[0].startswith("trial,method.eps,optim.lr,seed,status,epochs") and len(table) == 5   # seed: pairs runs
    for f in ("report/report.html", "report/curves.png", "report/final_vs_method_eps.png",
              "report/final_vs_optim_lr.png", "report/heatmap.png", "report/collapse_heatmap.png", "report/diagnostics.png",
              "study.json"):
        assert (out / f).is_file(), f
    stamp = (out / "trials" / "000-eps-0.05_lr-0.05" / "checkpoints" / "last.pt").stat().st_mtime_ns
    logs = []
    again = run_sweep(expand_study(raw), out, log=logs.append)
    assert again["finished"] == 4 and again["outcomes"] == []
    assert (out / "trials" / "000-eps-0.05_lr-0.05" / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="holds a different study"):
        run_sweep(expand_study(tiny_study(grid={"seed": [5]})), out, log=lambda s: None)


def test_failing_trial_is_recorded_and_others_run(tmp_path):
    raw = tiny_study(list=[{"method.name": "fgsm"}, {"data.name": "mnist", "data.root": str(tmp_path / "nodata")},
                           {"method.name": "pgd", "method.steps": 2}])
    summary = run_sweep(expand_study(raw), tmp_path / "s", workers=2, log=lambda s: None)
    assert summary["finished"] == 2 and summary["failed"] == 1
    bad = [p for p in (tmp_path / "s" / "trials").iterdir() if "mnist" in p.name][0]
    res = json.loads((bad / "results.json").read_text())
    assert res["status"] == "failed" and "train-images-idx3-ubyte" in res["message"]
    assert "Traceback" in (bad / "error.txt").read_text()
    assert "failed" in (tmp_path / "s" / "table.csv").read_text()
    # robustlab eval STUDY_DIR: best and last of every trial that has them, figures in the table and report
    proc = subprocess.run([sys.executable, "-m", "robustlab", "eval", str(tmp_path / "s"), "--steps", "3",
                           "--restarts", "1", "--n", "64", "--sanity", "32"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 trial(s) not ended: 1 failed (" in proc.stdout and "no best checkpoint; skipped" not in proc.stdout
    rows = list(csv.DictReader((tmp_path / "s" / "table.csv").open()))
    done = [r for r in rows if r["status"] == "finished"]
    assert len(done) == 2 and all(r["eval_protocol"] == "PGD-3-1" for r in rows)
    done_by_trial = {r["trial"]: r for r in done}
    for r in done:
        assert 0 <= float(r["eval_last_robust_acc"]) <= float(r["eval_last_clean_acc"]) <= 1
        assert r["eval_best_robust_acc"] != ""
    report_md = (tmp_path / "s" / "report" / "report.md").read_text()
    assert "eval best robust acc (%)" in report_md and "(eval.png)" in report_md
    assert "## Evaluations (robustlab eval)" in report_md and "PGD-3-1" in report_md
    assert (tmp_path / "s" / "report" / "eval.png").stat().st_size > 5000
    # a second protocol on the last checkpoints only: the table keeps both evaluations, keyed, the latest as eval_*
    proc = subprocess.run([sys.executable, "-m", "robustlab", "eval", str(tmp_path / "s"), "--steps", "2",
                           "--restarts", "1", "--n", "32", "--sanity", "0", "--checkpoint", "last"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {r["trial"]: r for r in csv.DictReader((tmp_path / "s" / "table.csv").open())}
    for r in (rows[d["trial"]] for d in done):
        assert r["eval_protocol"] == "PGD-2-1" and r["eval_best_robust_acc"] == ""
        assert r["eval_pgd_2_1_n32_best_robust_acc"] == "" and r["eval_pgd_2_1_n32_last_robust_acc"] == r["eval_last_robust_acc"]
        first = {k: v for k, v in done_by_trial[r["trial"]].items() if k.startswith("eval_") and k != "eval_flags"}
        assert r["eval_pgd_3_1_n64_last_robust_acc"] == first["eval_last_robust_acc"] != ""
        assert r["eval_pgd_3_1_n64_best_clean_acc"] == first["eval_best_clean_acc"] != ""


def test_diverged_trial_is_done_and_not_rerun(tmp_path):
    raw = tiny_study(list=[{"optim.lr": 0.05}, {"optim.lr": 1.0e+30}])
    first = run_sweep(expand_study(raw), tmp_path / "s", log=lambda s: None)
    assert (first["finished"], first["diverged"], first["failed"], first["other"]) == (1, 1, 0, 0)
    logs = []
    again = run_sweep(expand_study(raw), tmp_path / "s", log=logs.append)
    assert again["outcomes"] == [] and again["diverged"] == 1 and "0 to run" in logs[0]
    assert "1 diverged" in logs[-1]


def test_study_eval_skips_runs_that_have_not_ended(tmp_path, capsys):
    """robustlab eval STUDY_DIR evaluates ended runs only: a run whose results say interrupted (its last.pt is a
    mid-training checkpoint) is skipped, saying why, and gets no eval columns; once it has ended it is evaluated."""
    from robustlab.cli import main
    from robustlab.core.io import read_json, write_json
    from robustlab.core.layout import trial_dir
    study = expand_study(tiny_study(grid={"seed": [0, 1]}))
    run_sweep(study, tmp_path / "s", log=lambda s: None)
    cut = trial_dir(tmp_path / "s", study.trials[1].name) / "results.json"
    ended = read_json(cut)
    write_json(cut, {**ended, "status": "interrupted"})
    args = ["eval", str(tmp_path / "s"), "--checkpoint", "last", "--steps", "1", "--restarts", "1", "--n", "32",
            "--sanity", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"skipped 1 trial(s) not ended: 1 interrupted ({study.trials[1].name})" in out and study.trials[0].name + " [last]" in out
    rows = {r["trial"]: r for r in csv.DictReader((tmp_path / "s" / "table.csv").open())}
    assert rows[study.trials[0].name]["eval_last_robust_acc"] != "" and rows[study.trials[1].name]["eval_last_robust_acc"] == ""
    write_json(cut, ended)
    assert main(args) == 0
    rows = {r["trial"]: r for r in csv.DictReader((tmp_path / "s" / "table.csv").open())}
    assert all(r["eval_last_robust_acc"] != "" for r in rows.values())


def test_a_study_s_evaluations_run_after_its_trials_and_feed_its_claims(tmp_path, capsys):
    """`evaluations:` in a study file: `robustlab sweep` trains, then evaluates every ended trial as `robustlab eval
    STUDY_DIR` would, then judges the claims on the evaluation's columns, in one command. A second process that ends
    at the same time leaves a trial another holds to it, and the study's evaluation record keeps earlier files."""
    from robustlab.cli import main
    from robustlab.core.io import read_json
    from robustlab.core.locks import study_locks
    from robustlab.eval.command import EvalRequest
    from robustlab.eval.study import eval_study
    raw = tiny_study(list=[{"label": "tiny"}], grid={"seed": [0, 1]},
                     evaluations=[{"checkpoint": "last", "steps": 2, "restarts": 1, "n": 32, "sanity": 0, "threads": 1}],
                     claims=[{"says": "robust after the evaluation", "group": "tiny",   # no figure, no run meets it
                              "metric": "eval_pgd_2_1_n32_last_clean_acc", "min": 0.0, "at_least": 1.0}])
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "s"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    rows = {r["trial"]: r for r in csv.DictReader((tmp_path / "s" / "table.csv").open())}
    assert len(rows) == 2 and all(r["eval_pgd_2_1_n32_last_robust_acc"] != "" for r in rows.values())
    assert "evaluation: pgd on 32 points, checkpoint last" in out and "claim HOLDS: robust after the evaluation: 2 of 2" in out
    names = sorted(rows)
    with claim(study_locks(tmp_path / "s"), names[0]) as mine:     # another process holds trial 0
        assert mine
        eval_study(EvalRequest(path=str(tmp_path / "s"), checkpoint="last", attack={"name": "pgd", "steps": 2,
                                                                                    "restarts": 1}, n=32, sanity=0),
                   log=lambda s: print(s))
    assert f"left 1 trial(s) to the process that holds them (evaluating them now): {names[0]}" in capsys.readouterr().out
    record = read_json(tmp_path / "s" / "study_eval.json")["evaluations"]["pgd_2_1_n32"]["files"]
    assert sorted(record) == names          # trial 0's file is kept from the sweep's evaluation
    with claim(study_locks(tmp_path / "s"), names[0]), claim(study_locks(tmp_path / "s"), names[1]):
        eval_study(EvalRequest(path=str(tmp_path / "s"), checkpoint="last", attack={"name": "pgd", "steps": 2,
                                                                                    "restarts": 1}, n=32, sanity=0),
                   log=lambda s: None)    # every trial held elsewhere: this process evaluates nothing
    assert read_json(tmp_path / "s" / "study_eval.json")["protocol"] == "PGD-2-1"      # the latest record is kept
    rows = {r["trial"]: r for r in csv.DictReader((tmp_path / "s" / "table.csv").open())}
    assert all(r["eval_last_robust_acc"] != "" for r in rows.values())
    bad = dict(raw, evaluations=[{"attack": "autoattack", "steps": 5}])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["sweep", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "bad")]) == 2
    assert "--steps: the autoattack protocol does not take it" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()                     # refused before any training


def test_status_says_how_far_the_study_file_s_evaluations_have_got(tmp_path, capsys):
    """`robustlab status`: per evaluation of the study file, how many ended trials have its figures (a trial still
    to do is counted once every checkpoint the request names is recorded)."""
    from robustlab.cli import main
    from robustlab.core.locks import study_locks
    from robustlab.eval.command import EvalRequest
    from robustlab.eval.study import eval_study
    raw = tiny_study(grid={"seed": [0, 1]}, evaluations=[{"checkpoint": "last", "steps": 2, "restarts": 1, "n": 32,
                                                          "sanity": 0}, {"attack": "fgsm", "n": 16}])
    run_sweep(expand_study(raw), tmp_path / "s", workers=1, log=lambda s: None)      # trains; evaluates nothing

    def lines():
        assert main(["status", str(tmp_path / "s")]) == 0
        return [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("evaluation ")]
    assert lines() == ["evaluation PGD-2-1 on 32 points, checkpoint last: 0 of 2 ended trials; 2 to do (the sweep "
                       "runs them after its trials; or robustlab eval)",
                       "evaluation FGSM on 16 points, checkpoint best and last: 0 of 2 ended trials; 2 to do (the "
                       "sweep runs them after its trials; or robustlab eval)"]
    names = sorted(p.name for p in (tmp_path / "s" / "trials").iterdir())
    with claim(study_locks(tmp_path / "s"), names[0]):          # another process holds trial 0: only trial 1 is done
        eval_study(EvalRequest(path=str(tmp_path / "s"), checkpoint="last", attack={"name": "pgd", "steps": 2,
                                                                                    "restarts": 1}, n=32, sanity=0),
                   log=lambda s: None)
        eval_study(EvalRequest(path=str(tmp_path / "s"), checkpoint="last", attack={"name": "fgsm"}, n=16, sanity=0),
                   log=lambda s: None)         # the last checkpoint only: the request asks for best and last too
    assert lines()[0].startswith("evaluation PGD-2-1 on 32 points, checkpoint last: 1 of 2 ended trials; 1 to do")
    assert lines()[1].startswith("evaluation FGSM on 16 points, checkpoint best and last: 0 of 2 ended trials")


@pytest.mark.slow   # run by CI (.ci/run); `make test` skips it (suite time on 2 cores)
def test_study_eval_in_two_processes_shares_the_trials_and_matches_one_process(tmp_path):
    """`robustlab eval STUDY --workers 2`: two processes claim trials one by one, so every ended trial is evaluated
    (none twice at once) and the table holds the figures one process gives on a copy of the same study."""
    import shutil
    run_sweep(expand_study(tiny_study(grid={"seed": [0, 1, 2]})), tmp_path / "s", log=lambda s: None)
    shutil.copytree(tmp_path / "s", tmp_path / "one")
    args = ["--checkpoint", "last", "--steps", "2", "--restarts", "1", "--n", "32", "--sanity", "0", "--threads", "1"]
    cmd = [sys.executable, "-m", "robustlab", "eval"]
    two = subprocess.run(cmd + [str(tmp_path / "s"), "--workers", "2", *args], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr
    assert "[eval 1]" in two.stdout or "[eval 2]" in two.stdout
    one = subprocess.run(cmd + [str(tmp_path / "one"), *args], capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr

    def figures(study):
        return {r["trial"]: (r["eval_last_clean_acc"], r["eval_last_robust_acc"])
                for r in csv.DictReader((study / "table.csv").open())}
    got = figures(tmp_path / "s")
    assert len(got) == 3 and all(v[1] != "" for v in got.values()) and got == figures(tmp_path / "one")
    from robustlab.core.io import read_json
    assert len(read_json(tmp_path / "s" / "study_eval.json")["evaluations"]["pgd_2_1_n32"]["files"]) == 3
    bad = subprocess.run(cmd + [str(tmp_path / "s" / "trials" / sorted(got)[0]), "--workers", "2", *args],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--workers: got 2; must be >= 1, and above 1 only for a study folder" in bad.stderr


def test_long_commands_write_their_progress_lines_as_they_come():
    """`nohup robustlab eval STUDY > log`: stdout to a file is block-buffered by Python, so a study evaluation's lines
    reached the log only at its end; the long-running commands switch their stdout to line buffering."""
    code = ("import sys; from robustlab.cli import main; before = sys.stdout.line_buffering; "
            "rc = main(['eval', 'no-such-run']); sys.stderr.write(f'{before} {sys.stdout.line_buffering} {rc}')")
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.strip().endswith("False True 2"), proc.stderr


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "eval_seconds")} for r in rows]


@pytest.mark.slow   # run by CI (.ci/run); `make test` skips it (suite time on 2 cores)
def test_killed_worker_loses_nothing_and_rerun_completes(tmp_path):
    base = {**TINY_BASE, "data": {"name": "mnist5k", "val_size": 200}, "train": {"epochs": 3, "progress": "none"},
            "monitor": {"eval_points": 200, "attack_steps": 2}}
    study = {"name": "k", "base": base, "grid": {"seed": [0, 1]}, "workers": 2}
    path = tmp_path / "k.yaml"
    path.write_text(yaml.safe_dump(study))
    cmd = [sys.executable, "-m", "robustlab", "sweep", str(path), "--out"]
    # the worker of trial 0 SIGKILLs itself inside epoch 2 (at a known step); trial 1's worker trains on
    proc = subprocess.run(cmd + [str(tmp_path / "cut")], capture_output=True, text=True, timeout=300,
                          env=signal_at_env("SIGKILL", epoch=2, step=3, run="000-seed-0"))
    out = proc.stdout + proc.stderr
    assert "000-seed-0: interrupted" in out and "001-seed-1: finished" in out, out
    assert proc.returncode == 1
    assert len(read_jsonl(tmp_path / "cut" / "trials" / "000-seed-0" / "metrics.jsonl")) == 1
    rerun = subprocess.run(cmd + [str(tmp_path / "cut")], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "001-seed-1" not in rerun.stdout.split("to run")[1]  # the finished trial is not run again
    subprocess.run(cmd + [str(tmp_path / "ref")], check=True, capture_output=True, timeout=300)
    for t in ("000-seed-0", "001-seed-1"):
        a = read_jsonl(tmp_path / "cut" / "trials" / t / "metrics.jsonl")
        b = read_jsonl(tmp_path / "ref" / "trials" / t / "metrics.jsonl")
        assert [r["epoch"] for r in a] == [1, 2, 3] and _comparable(a) == _comparable(b)


def _sigterm_a_long_sweep(tmp_path, backend_args=(), resources=None, wait_s=120):
    """Start a sweep of two endless trials, SIGTERM its process alone once both have an epoch; (returncode, output,
    study folder, the trials' metrics files)."""
    path = tmp_path / "t.yaml"
    extra = {"resources": resources} if resources else {}
    path.write_text(yaml.safe_dump(tiny_study(grid={"seed": [0, 1]}, workers=2, **extra,
                                              base={**TINY_BASE, "train": {"epochs": 10_000, "progress": "none"}})))
    study_dir = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "robustlab", "sweep", str(path), "--out", str(study_dir), *backend_args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = [study_dir / "trials" / t / "metrics.jsonl" for t in ("000-seed-0", "001-seed-1")]
    deadline = time.time() + wait_s
    while time.time() < deadline and not all(m.exists() and read_jsonl(m) for m in metrics):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out, study_dir, metrics


def _assert_interrupted_and_released(study_dir, metrics):
    for m in metrics:
        res = json.loads((m.parent / "results.json").read_text())
        assert res["status"] == "interrupted" and res["epochs_completed"] >= 1, res
        with claim(study_dir / ".locks", m.parent.name) as mine:
            assert mine     # the claim was released


def test_sigterm_to_the_sweep_alone_stops_its_workers(tmp_path):
    """A scheduler or `kill PID` signals only the sweep process: its workers must stop too (they used to train on as
    orphans, holding their trials' claims), each run recorded as interrupted at its last checkpoint."""
    returncode, out, study_dir, metrics = _sigterm_a_long_sweep(tmp_path)
    assert returncode == 130, out
    assert "stopping 2 running trial(s)" in out and out.count(": interrupted (") == 2, out
    left = subprocess.run(["pgrep", "-f", f"robustlab.sweep.worker {study_dir}"], capture_output=True, text=True).stdout
    assert left.strip() == "", f"orphan workers: {left}"
    _assert_interrupted_and_released(study_dir, metrics)


@pytest.mark.slow   # run by CI (.ci/run); `make test` skips it (suite time on 2 cores)
def test_concurrent_sweeps_run_each_trial_once(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_study(grid={"seed": [0, 1, 2, 3]}, workers=1)))
    cmd = [sys.executable, "-m", "robustlab", "sweep", str(path), "--out", str(tmp_path / "s")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    trained = [line for o in outs for line in o.splitlines() if ": finished (" in line]
    assert len(trained) == 4, outs
    assert len({line.split(":")[0] for line in trained}) == 4


@pytest.mark.slow   # run by CI (.ci/run); `make test` skips it (suite time on 2 cores)
def test_ray_backend(tmp_path):
    pytest.importorskip("ray")
    raw = tiny_study(grid={"seed": [0, 1], "method.eps": [0.05, 0.1]}, resources={"cpus": 1})
    summary = run_sweep(expand_study(raw), tmp_path / "r", workers=2, backend="ray", log=lambda s: None)
    assert summary["finished"] == 4
    local = run_sweep(expand_study(raw), tmp_path / "l", workers=2, log=lambda s: None)
    assert local["finished"] == 4
    for t in expand_study(raw).trials:
        a = read_jsonl(tmp_path / "r" / "trials" / t.name / "metrics.jsonl")
        b = read_jsonl(tmp_path / "l" / "trials" / t.name / "metrics.jsonl")
        assert _comparable(a) == _comparable(b)


@pytest.mark.slow   # run by CI (.ci/run); `make test` skips it (suite time on 2 cores)
def test_sigterm_to_a_ray_sweep_cancels_its_tasks(tmp_path):
    """SIGTERM (or Ctrl-C) to a Ray sweep's driver cancels its running tasks politely before the local cluster goes:
    each run is recorded as interrupted at its last checkpoint and resumes, as with the local executor (the tasks
    used to be killed with the cluster, their runs left looking alive)."""
    pytest.importorskip("ray")
    returncode, out, study_dir, metrics = _sigterm_a_long_sweep(tmp_path, ["--backend", "ray"], {"cpus": 1}, wait_s=240)
    assert returncode == 130, out
    assert "stopping 2 trial(s)" in out and out.count(": interrupted (") == 2, out
    _assert_interrupted_and_released(study_dir, metrics)
    lines = [len(read_jsonl(m)) for m in metrics]
    time.sleep(3)
    assert [len(read_jsonl(m)) for m in metrics] == lines     # nothing trains on


def test_stopping_ray_tasks_marks_the_runs_the_killed_tasks_left_running(tmp_path):
    """On a loaded machine a cancelled task may outlive the stop's timeout and be force-cancelled before its run
    records the interruption (seen once in CI-like load: both runs left saying `running`); the driver then marks
    them, and leaves a run that recorded its own end as it was. Ray is replaced by a scripted stand-in."""
    from robustlab.core.io import read_json, write_json
    from robustlab.core.layout import trial_dir
    from robustlab.sweep.ray_executor import stop_ray_tasks
    from robustlab.sweep.study import Trial

    class ScriptedRay:          # no task ever answers the polite cancel
        def __init__(self):
            self.cancelled = []

        def cancel(self, ref, force):
            self.cancelled.append((ref, force))

        def wait(self, refs, num_returns, timeout):
            return [], list(refs)

        def get(self, ref, timeout):
            raise RuntimeError("TaskCancelledError")

    statuses = {"a": "running", "b": "finished"}
    for name, status in statuses.items():
        trial_dir(tmp_path, name).mkdir(parents=True)
        write_json(trial_dir(tmp_path, name) / "results.json", {"status": status, "epochs_completed": 3})
    ray = ScriptedRay()
    pending = {f"ref-{n}": Trial(name=n, overrides={}, config={}) for n in statuses}
    outcomes = list(stop_ray_tasks(ray, pending, lambda s: None, tmp_path, timeout=0))
    assert ray.cancelled == [("ref-a", False), ("ref-b", False), ("ref-a", True), ("ref-b", True)]
    assert [o["status"] for o in outcomes] == ["interrupted", "interrupted"]
    after = {n: read_json(trial_dir(tmp_path, n) / "results.json") for n in statuses}
    assert after["a"]["status"] == "interrupted" and after["a"]["epochs_completed"] == 3
    assert after["b"]["status"] == "finished"


def test_every_shipped_study_expands():
    configs = Path(__file__).parent.parent / "configs"
    transfer = configs / "transfer"
    searches = Path(__file__).parent.parent / "docs" / "evidence" / "searches"   # the rounds behind the evidence
    studies = sorted(configs.joinpath("studies").glob("*.yaml")) + sorted(configs.joinpath("arat").glob("*.yaml")) + sorted(
        p for p in transfer.glob("*.yaml") if "transfer" not in p.stem and not p.stem.endswith("_base")) + sorted(
        searches.glob("*.yaml"))
    assert len(studies) >= 35
    for path in studies:
        study = load_study(path)
        assert study.trials and len({t.name for t in study.trials}) == len(study.trials)
    from robustlab.eval.transfer import load_transfer_study
    for path in sorted(transfer.glob("*transfer*.yaml")):     # transfer studies validate too
        assert load_transfer_study(path).attacks


@pytest.mark.slow   # run by CI (.ci/run); `make test` skips it (suite time on 2 cores)
def test_study_report_with_a_key_only_some_entries_set(tmp_path):
    """A numeric key swept by one list entry only (other trials have no value) is plotted without the others."""
    from robustlab.report.study import write_study_report
    base = {"data": {"name": "synthetic", "val_size": 32, "batch_size": 64}, "model": {"name": "wong_mnist"},
            "method": {"name": "fgsm", "eps": 0.1}, "train": {"epochs": 1, "progress": "none", "threads": 1},
            "monitor": {"eval_points": 32, "attack_steps": 1, "diagnostics": []}, "final_eval": {"points": 0}}
    study = expand_study({"name": "mixed", "base": base, "list": [{"label": "a", "optim.lr": 0.05},
                                                                  {"label": "b", "optim.lr": 0.02},
                                                                  {"label": "c", "data.train_size": 200}]})
    run_sweep(study, tmp_path / "s", workers=1, log=lambda s: None)
    out = write_study_report(tmp_path / "s")
    assert (out / "final_vs_optim_lr.png").is_file() and (out / "report.html").is_file()


def test_select_runs_part_of_a_study_and_the_rest_later(tmp_path):
    """``--select``: a study run over several sessions runs a part in each; the folder holds the whole study."""
    from robustlab.sweep.study import select_trials
    raw = tiny_study(grid={"seed": [0, 1]}, list=[{"label": "FGSM-AT"}, {"label": "PGD", "method.name": "pgd",
                                                                         "method.steps": 2}], workers=1)
    study = expand_study(raw)
    assert [(t.overrides["label"], t.config["seed"]) for t in select_trials(study, ["seed=1", "label=PGD"])] == \
        [("PGD", 1)]
    assert len(select_trials(study, ["seed=0", "seed=1", "label=FGSM-AT"])) == 2
    with pytest.raises(ConfigError, match="--select: got 'method.steps2'; expected KEY=VALUE"):
        select_trials(study, ["method.steps2"])
    with pytest.raises(ConfigError, match="'optim.foo' is not a key"):
        select_trials(study, ["optim.foo=1"])
    with pytest.raises(ConfigError, match="matches none"):
        select_trials(study, ["seed=7"])
    out = tmp_path / "s"
    first = run_sweep(study, out, log=lambda s: None, select=["seed=0"])
    assert (first["trials"], first["selected"], first["selected_finished"], first["finished"]) == (4, 2, 2, 2)
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert len(rows) == 4 and sorted(r["status"] for r in rows)[:2] == ["finished", "finished"]
    second = run_sweep(expand_study(raw), out, log=lambda s: None, select=["seed=1"])
    assert second["finished"] == 4 and len(second["outcomes"]) == 2     # only the other half ran


def test_a_study_folder_from_an_earlier_version_resumes(tmp_path):
    """A folder whose manifest was written before a config key existed (its trials' configs lack it, so its
    fingerprint differs) holds the same study and resumes; a changed setting is still refused."""
    raw = tiny_study(grid={"seed": [0, 1]}, workers=1)
    out = tmp_path / "s"
    run_sweep(expand_study(raw), out, log=lambda s: None, select=["seed=0"])
    manifest = json.loads((out / "study.json").read_text())
    for t in manifest["trials"]:
        del t["config"]["final_eval"]["protocol"]          # as an earlier robustlab wrote it
    manifest["fingerprint"] = "0123456789abcdef"
    (out / "study.json").write_text(json.dumps(manifest))
    again = run_sweep(expand_study(raw), out, log=lambda s: None)
    assert again["finished"] == 2 and len(again["outcomes"]) == 1   # seed 1 ran; seed 0 was kept
    with pytest.raises(ConfigError, match="holds a different study"):
        run_sweep(expand_study(tiny_study(grid={"seed": [0, 1]}, overrides={"optim.lr": 0.05})), out, log=lambda s: None)


def test_deadline_parses_durations_clock_times_and_dates():
    import datetime as dt
    from robustlab.sweep.deadline import parse_deadline
    now = dt.datetime(2026, 12, 7, 10, 0).timestamp()
    assert parse_deadline("90m", now) == now + 5400 and parse_deadline("1h30m", now) == now + 5400
    assert parse_deadline("2h", now) == now + 7200 and parse_deadline("45s", now) == now + 45
    assert parse_deadline("12:30", now) == dt.datetime(2026, 12, 7, 12, 30).timestamp()
    assert parse_deadline("09:15", now) == dt.datetime(2026, 12, 8, 9, 15).timestamp()     # its next occurrence
    assert parse_deadline("2026-12-07T17:30", now) == dt.datetime(2026, 12, 7, 17, 30).timestamp()
    for bad, needle in [("soon", "expected a duration"), ("", "expected a duration"), ("25:00", "hours 0-23"),
                        ("2026-12-06T17:30", "which has passed"), ("1d", "expected a duration")]:
        with pytest.raises(ConfigError, match=needle) as info:
            parse_deadline(bad, now)
        assert str(info.value).startswith("--deadline: got")


def _finished(run_dir: Path, train_seconds: float, epoch_seconds: list[float], status="finished") -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"status": status, "epochs_completed": len(epoch_seconds),
                                                      "train_seconds": train_seconds}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "seconds": s, "eval_seconds": 10.0}) + "\n"
                                                   for i, s in enumerate(epoch_seconds)))


def test_deadline_estimates_a_trial_from_the_slowest_finished_trial_like_it(tmp_path):
    """Like = the same overrides but seed and kernel path; an interrupted trial needs its epochs left only; a resumed
    run's time is its epochs' sum when that exceeds its last attempt's train_seconds; nothing alike: it starts."""
    from robustlab.sweep.deadline import StartDeadline
    from robustlab.sweep.estimate import seconds_left
    study = expand_study(tiny_study(grid={"seed": [0, 1, 2]}, list=[
        {"label": "A", "train.kernel_path": "default"}, {"label": "A", "train.kernel_path": "avx2"},
        {"label": "B", "method.name": "pgd", "method.steps": 2}], overrides={"train.epochs": 4}))
    by = {(t.overrides["label"], t.config["seed"], t.overrides.get("train.kernel_path")): t for t in study.trials}
    tdir = tmp_path / "trials"
    _finished(tdir / by["A", 0, "default"].name, 1000.0, [240.0] * 4)        # 1000 s
    _finished(tdir / by["A", 0, "avx2"].name, 500.0, [340.0] * 4)           # resumed: its epochs' 4 x 350 s = 1400 s
    _finished(tdir / by["A", 1, "default"].name, 900.0, [100.0, 100.0], status="interrupted")   # 2 of 4 epochs left
    clock = [0.0]
    gate = StartDeadline(tmp_path, study.trials, deadline=1200.0, clock=lambda: clock[0])
    assert seconds_left(tmp_path, study.trials, by["A", 2, "avx2"]) == pytest.approx(1400.0)
    assert seconds_left(tmp_path, study.trials, by["A", 1, "default"]) == pytest.approx(700.0)
    assert seconds_left(tmp_path, study.trials, by["B", 0, None]) is None and gate.hold(by["B", 0, None]) is None
    assert gate.hold(by["A", 1, "default"]) is None
    reason = gate.hold(by["A", 2, "avx2"])
    assert reason == "not started: needs ~23 min (the slowest finished trial like it), 20 min left before the deadline"
    clock[0] = 600.0                                                         # 600 s left: the interrupted one is held too
    assert gate.hold(by["A", 1, "default"]) is not None


def test_a_sweep_with_a_deadline_starts_no_trial_it_cannot_finish_and_a_rerun_runs_it(tmp_path):
    raw = tiny_study(grid={"seed": [0, 1]}, workers=1)
    out, logs = tmp_path / "s", []
    with pytest.raises(ConfigError, match="--deadline: works with --backend local only"):
        run_sweep(expand_study(raw), out, backend="ray", deadline="1h", log=logs.append)
    # seed 0 has nothing like it finished: it starts; it takes > 1 s, so seed 1 (estimated from it) cannot end by then
    summary = run_sweep(expand_study(raw), out, deadline="1s", log=logs.append)
    assert (summary["finished"], summary["not_started"], summary["other"]) == (1, 1, 1)
    assert any(": not started: needs ~" in line for line in logs) and "held back by --deadline" in logs[-1]
    assert not (out / "trials" / "001-seed-1").exists()
    again = run_sweep(expand_study(raw), out, deadline="1h", log=lambda s: None)
    assert (again["finished"], again["not_started"]) == (2, 0)


def test_is_claimed_sees_a_live_holder_and_writes_nothing(tmp_path):
    from robustlab.core.locks import is_claimed
    assert not is_claimed(tmp_path, "t")                          # no lock file: nobody ever ran it
    with claim(tmp_path, "t") as mine:
        assert mine and is_claimed(tmp_path, "t")
        before = (tmp_path / "t.lock").read_bytes()
        assert is_claimed(tmp_path, "t") and (tmp_path / "t.lock").read_bytes() == before
    assert not is_claimed(tmp_path, "t")                          # released: a rerun may take it


def test_status_tells_running_from_stopped_and_estimates_the_time_left(tmp_path, capsys):
    """A trial saying 'running' is running only while its claim is held; the time left comes from the finished trial
    like each unfinished one, scaled by its epochs left; the claims are counted as the sweep counts them."""
    from robustlab.cli import main
    from robustlab.sweep import prepare_study_dir
    from robustlab.sweep.status import status_lines
    study = expand_study(tiny_study(grid={"seed": [0, 1, 2]}, list=[{"label": "A"}, {"label": "B", "optim.lr": 0.05}],
                                    claims=[{"says": "A ends robust", "group": "A", "metric": "test_pgd_acc",
                                             "min": 0.2}]))
    prepare_study_dir(study, tmp_path)
    name = {(t.overrides["label"], t.config["seed"]): t.name for t in study.trials}
    tdir = tmp_path / "trials"
    _finished(tdir / name["A", 0], 600.0, [200.0, 200.0])
    (tdir / name["A", 0] / "metrics.jsonl").write_text("".join(json.dumps(
        {"epoch": e, "seconds": 200.0, "test_pgd_acc": 0.3}) + "\n" for e in (1, 2)))
    for seed in (1, 2):                                           # one epoch of two done, both saying running
        _finished(tdir / name["A", seed], 0.0, [200.0], status="running")
        (tdir / name["A", seed] / "metrics.jsonl").write_text(json.dumps(
            {"epoch": 1, "seconds": 200.0, "test_clean_acc": 0.5, "test_pgd_acc": 0.25}) + "\n")
    (tdir / name["B", 0]).mkdir(parents=True)
    (tdir / name["B", 0] / "results.json").write_text(json.dumps({"status": "failed", "message": "boom"}))
    with claim(tmp_path / ".locks", name["A", 1]):
        lines = status_lines(tmp_path, now=time.time())
    assert lines[0] == f"study tiny ({tmp_path}): 6 trials: 1 finished, 1 running, 1 stopped, 1 failed, 2 pending"
    assert lines[1].startswith(f"  running  {name['A', 1]}: epoch 1/2, test_clean_acc 0.500, test_pgd_acc 0.250 (")
    assert lines[1].endswith(" ago); ~5 min left")                 # half of the finished A's 600 s
    assert f"  stopped  {name['A', 2]}" in lines and f"  failed   {name['B', 0]}" in lines
    assert any(line.startswith("time left: ~10 min of one worker for 2 of the 4 unfinished trials") and
               line.endswith("; 2 have no finished trial like them yet") for line in lines)
    assert lines[-1].startswith("claim ") and "A ends robust: 1 of 1 runs" in lines[-1]
    fresh = tmp_path / "fresh"                                     # nothing finished anywhere: no estimate at all
    prepare_study_dir(study, fresh)
    assert status_lines(fresh)[1] == "time left: unknown (none of the 6 unfinished trials has a finished trial like it yet)"
    first = fresh / "trials" / name["B", 1]                       # the first trial of a study: its own pace
    _finished(first, 0.0, [250.0], status="running")
    (first / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "seconds": 250.0, "eval_seconds": 50.0}) + "\n")
    with claim(fresh / ".locks", name["B", 1]):
        assert status_lines(fresh)[1].endswith("; ~5 min left at its own pace (its final evaluation not counted)")
    assert main(["status", str(tmp_path / "trials")]) == 2
    assert "not a study folder (no study.json)" in capsys.readouterr().err
    assert main(["status", str(tmp_path), "--workers", "2"]) == 0
    assert "(~5 min with 2 at a time)" in capsys.readouterr().out


def test_trial_cost_counts_attack_steps_extra_passes_and_training_images():
    """The longest trials start first: TRADES / ARAT with 10 steps cost PGD-10's passes, a regulariser or a
    sharpness-aware minimiser one more pass, 500 images per class 2.5x 200."""
    from robustlab.sweep import trial_cost

    def cost(method, optim=None, data=None):
        return trial_cost({"method": method, "optim": optim or {"minimizer": {"name": "plain"}},
                           "data": {"train_per_class": 200} if data is None else data, "train": {"epochs": 2}})
    pgd10 = cost({"name": "pgd", "steps": 10})
    assert pgd10 == 2 * 11 * 2000 == cost({"name": "trades", "steps": 10}) == cost({"name": "arat", "steps": 10})
    assert cost({"name": "fgsm", "steps": 10}) == 2 * 2 * 2000                       # single step: steps unused
    assert cost({"name": "fgsm", "regularizers": [{"name": "elle"}]}) == 2 * 3 * 2000
    assert cost({"name": "standard"}, {"minimizer": {"name": "sam"}}) == 2 * 2 * 2000 == 2 * cost({"name": "standard"})
    assert cost({"name": "pgd", "steps": 10}, data={"train_per_class": 500}) == 2.5 * pgd10
    assert cost({"name": "pgd", "steps": 10}, data={}) > cost({"name": "pgd", "steps": 10}, data={"train_size": 50000})


def test_a_resumed_trial_is_ordered_by_what_is_left_of_it(tmp_path):
    """A PGD-10 trial with 9 of its 10 epochs done costs less than an FGSM trial not started (11 x 1 against 2 x 10
    passes-epochs): the sweep starts the FGSM trial first. A sweep that ordered by the whole trial's cost would not."""
    from robustlab.sweep import cost_left, prepare_study_dir, run_order, trial_cost
    from robustlab.core.layout import trial_dir
    raw = {"name": "order", "base": {"data": {"name": "synthetic", "train_size": 256}, "model": {"name": "wong_mnist"},
                                     "train": {"epochs": 10}},
           "list": [{"label": "PGD", "method": {"name": "pgd", "eps": 0.1, "steps": 10}},
                    {"label": "FGSM", "method": {"name": "fgsm", "eps": 0.1}}]}
    study = expand_study(raw)
    prepare_study_dir(study, tmp_path)
    pgd, fgsm = study.trials
    assert trial_cost(pgd.config) == 5.5 * trial_cost(fgsm.config)
    run = trial_dir(tmp_path, pgd.name)
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(1, 10)))
    assert cost_left(tmp_path, pgd) == pytest.approx(0.55 * cost_left(tmp_path, fgsm))
    assert [t.name for t in run_order(tmp_path, study.trials)] == [fgsm.name, pgd.name]
    (run / "results.json").write_text(json.dumps({"status": "finished", "epochs_completed": 10}))
    assert [t.name for t in run_order(tmp_path, study.trials)] == [fgsm.name]
