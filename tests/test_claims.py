"""Claims (issue 14): a statement, the rule each run must meet, and the fraction of runs that must meet it on every
CPU kernel path; counted from the study table and shown first in the study report."""
import pytest

from robustlab.core.errors import ConfigError
from robustlab.report.claims import count_text, evaluate_claims, parse_claims
from robustlab.sweep import expand_study, run_sweep

from test_sweep import tiny_study


def row(label, collapse, path, robust=None, status="finished"):
    return {"label": label, "collapse": collapse, "kernel_path": path, "final_robust_acc": robust, "status": status}


ROWS = [row("FGSM", "co", "AVX2"), row("FGSM", "co", "AVX2"), row("FGSM", "failure", "AVX2"),
        row("FGSM", "co", "DEFAULT"), row("FGSM", "co", "DEFAULT"), row("FGSM", None, "DEFAULT", status="running"),
        row("N-FGSM", "none", "AVX2", 0.7), row("N-FGSM", "none", "DEFAULT", 0.45), row("N-FGSM", "co", "DEFAULT", 0.9),
        row("N-FGSM", "none", "DEFAULT", None, status="diverged")]


def test_counts_per_kernel_path_and_the_every_path_rule():
    co, holds = parse_claims([
        {"says": "FGSM collapses", "group": "FGSM", "verdict": ["co"], "at_least": 0.6},
        {"says": "N-FGSM holds", "group": "N-FGSM", "verdict": ["none"], "metric": "final_robust_acc", "min": 0.5,
         "at_least": 0.5}])
    r_co, r_holds = evaluate_claims([co, holds], ROWS)
    # AVX2 2/3 >= 0.6 and DEFAULT 2/2: holds; the running trial is not counted
    assert (r_co["met"], r_co["runs"], r_co["pending"], r_co["holds"]) == (4, 5, 1, True)
    assert r_co["paths"] == {"AVX2": (2, 3), "DEFAULT": (2, 2)}
    assert count_text(r_co) == "4 of 5 runs (AVX2 2/3, DEFAULT 2/2), 1 not ended"
    # DEFAULT: 0.45 < 0.5, the CO run and the diverged run (no figure) fail: 0/3 -> does not hold on that path
    assert r_holds["paths"] == {"AVX2": (1, 1), "DEFAULT": (0, 3)} and not r_holds["holds"]
    stricter = parse_claims([{"says": "x", "group": "FGSM", "verdict": ["co"], "at_least": 0.7}])
    assert not evaluate_claims(stricter, ROWS)[0]["holds"]          # AVX2 2/3 < 0.7
    assert not evaluate_claims(parse_claims([{"says": "x", "group": "none", "verdict": ["co"]}]), ROWS)[0]["holds"]


@pytest.mark.parametrize("raw,needle", [
    ([{"says": "x", "group": "g", "verdict": ["collapsed"]}], "study.claims[0].verdict: got 'collapsed'; allowed: co, failure, none"),
    ([{"says": "x", "group": "g"}], "give a verdict, a metric or a comparison"),
    ([{"says": "x", "group": "g", "metric": "final_robust_acc"}], "needs min or max"),
    ([{"says": "x", "group": "g", "verdict": ["co"], "at_least": 2}], "at_least"),
    ([{"says": "x", "group": "g", "versus": ["h"]}], "study.claims[0].versus: a comparison needs both"),
    ([{"says": "x", "group": "g", "above": ["final_clean_acc"]}], "study.claims[0].versus: a comparison needs both"),
    ([{"says": "x", "group": "g", "versus": ["g"], "above": ["a"]}], "'g' is the claim's own group"),
    ({"says": "x"}, "expected a list of mappings"),
])
def test_bad_claims(raw, needle):
    with pytest.raises(ConfigError) as info:
        expand_study(tiny_study(claims=raw))
    assert needle in str(info.value)


def test_study_report_states_its_claims(tmp_path):
    raw = tiny_study(list=[{"label": "FGSM"}], grid={"seed": [0, 1]},
                     claims=[{"says": "FGSM never collapses here", "group": "FGSM", "verdict": ["none"], "at_least": 1.0},
                             {"says": "FGSM reaches 200 % robust accuracy", "group": "FGSM",
                              "metric": "test_pgd_acc", "min": 2.0}])
    logs = []
    summary = run_sweep(expand_study(raw), tmp_path / "s", log=logs.append)
    verdicts = [c["holds"] for c in summary["claims"]]
    assert verdicts == [True, False] and summary["claims"][0]["runs"] == 2
    report = (tmp_path / "s" / "report" / "report.md").read_text()
    assert "Claim HOLDS: FGSM never collapses here: 2 of 2 runs" in report
    assert "Claim does not hold: FGSM reaches 200 % robust accuracy: 0 of 2 runs" in report
    assert any(line.startswith("claim HOLDS: FGSM never collapses here") for line in logs)


def test_evidence_blocks_are_rewritten_from_the_runs():
    from robustlab.report.evidence import read_csv, render_blocks, write_csv
    rows = [{"study": "s", "trial": f"t{i}", "label": lab, "seed": i, "kernel_path": path, "status": "finished",
             "collapse": verdict, "final_robust_acc": rob, "final_clean_acc": 0.98, "final_protocol": "PGD-50-1",
             "test_pgd_acc": rob, "best_pgd": 0.6}
            for i, (lab, path, verdict, rob) in enumerate([("FGSM", "AVX2", "co", 0.02), ("FGSM", "DEFAULT", "co", 0.04),
                                                          ("FGSM", "DEFAULT", "none", 0.5)])]
    rows = read_csv(write_csv(rows))            # through the file format, as render reads it
    assert rows[2]["final_robust_acc"] == 0.5 and rows[0]["cpu"] is None
    claims = parse_claims([{"says": "FGSM collapses", "group": "FGSM", "verdict": ["co"], "at_least": 0.5}])
    doc = ("intro\n<!-- evidence:x:claims -->\nstale text\n<!-- /evidence:x:claims -->\n"
           "<!-- evidence:x:groups -->\n<!-- /evidence:x:groups -->\nend\n")
    out = render_blocks(doc, lambda name: (claims, rows))
    assert "- **holds**: FGSM collapses: 2 of 3 runs (AVX2 1/1, DEFAULT 1/2)." in out and "stale" not in out
    assert "| FGSM | DEFAULT | 2 | 1/2 | 0/2 | 1/2 | 0/2 | 27.0 (4.0–50.0) | 98.0 (98.0–98.0) | 60.0 (60.0–60.0) |" in out
    assert out.startswith("intro\n") and out.endswith("end\n") and render_blocks(out, lambda n: (claims, rows)) == out


def test_study_evaluation_figures_travel_through_the_evidence_file():
    from robustlab.report.evidence import evals_markdown, read_csv, write_csv
    rows = [{"study": "s", "trial": f"t{i}", "label": "ARAT", "seed": i, "kernel_path": "AVX2", "status": "finished",
             "eval_pgd_50_10_n500_last_robust_acc": rob, "eval_pgd_50_10_n500_best_robust_acc": None,
             "eval_pgd_50_10_autoattack_n100_last_robust_acc": aa, "eval_last_robust_acc": 0.5}
            for i, (rob, aa) in enumerate([(0.9, 0.88), (0.8, 0.7)])]
    text = write_csv(rows)
    header = text.splitlines()[0].split(",")
    # keyed figures after the fixed columns; the unkeyed latest-evaluation column and empty columns stay out
    assert header[-2:] == ["eval_pgd_50_10_n500_last_robust_acc", "eval_pgd_50_10_autoattack_n100_last_robust_acc"]
    back = read_csv(text)
    assert back[1]["eval_pgd_50_10_autoattack_n100_last_robust_acc"] == 0.7
    md = evals_markdown(back)
    assert "| group | kernel path | runs | PGD-50-10, 500 points: robust (%) | PGD-50-10+AutoAttack, 100 points: robust (%) |" in md
    assert "| ARAT | AVX2 | 2 | 85.0 (80.0–90.0) | 79.0 (70.0–88.0) |" in md


def test_recorded_evidence_matches_readme_and_docs():
    """README and docs show what their evidence files say (benchmarks/claims_evidence.py render)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "claims_evidence.py"), "check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_map_block_counts_each_cell_over_seeds_and_paths():
    from robustlab.report.evidence import map_markdown
    rows = [{"label": "FGSM", "setting": f"method.eps={eps} data.inject.beta={beta}", "status": "finished",
             "collapse": verdict, "final_robust_acc": rob}
            for eps, beta, verdict, rob in [(0.2, 0.1, "co", 0.0), (0.2, 0.1, "failure", 0.1), (0.2, 0.1, "none", 0.5),
                                            (0.15, 0.1, "none", 0.8), (0.2, 0.0, "co", 0.2)]]
    md = map_markdown(rows)
    assert "| beta \\ eps | 0.15 | 0.2 |" in md
    assert "| 0.1 | 0/1 · 0/1 · 80 | 1/3 · 1/3 · 20 |" in md and "| 0 | – | 1/1 · 0/1 · 20 |" in md


def test_a_run_must_meet_every_bound():
    (claim,) = parse_claims([{"says": "FGSM-AT ends robust to FGSM, not to PGD", "group": "F", "metric": "final_robust_acc",
                              "max": 0.1, "bounds": [{"metric": "test_fgsm_acc", "min": 0.7}], "at_least": 0.5}])
    rows = [{"label": "F", "status": "finished", "kernel_path": "AVX2", "final_robust_acc": 0.0, "test_fgsm_acc": 0.9},
            {"label": "F", "status": "finished", "kernel_path": "AVX2", "final_robust_acc": 0.0, "test_fgsm_acc": 0.5},
            {"label": "F", "status": "finished", "kernel_path": "AVX2", "final_robust_acc": 0.3, "test_fgsm_acc": 0.9}]
    r = evaluate_claims([claim], rows)[0]
    assert (r["met"], r["runs"], r["holds"]) == (1, 3, False)
    assert claim.rule() == "final_robust_acc <= 0.1, test_fgsm_acc >= 0.7; in >= 50% of the runs on every kernel path"
    with pytest.raises(ConfigError, match=r"study.claims\[0\].bounds\[0\]: a bound needs a metric and min or max"):
        parse_claims([{"says": "x", "group": "F", "bounds": [{"metric": "final_robust_acc"}]}])


def test_comparison_pairs_runs_by_seed_and_kernel_path():
    (claim,) = parse_claims([{"says": "A: cleaner than B at no robustness cost", "group": "A", "versus": ["B", "C"],
                              "above": ["clean"], "not_below": ["robust"], "at_least": 0.5}])

    def r(label, seed, path, clean, robust, status="finished"):
        return {"label": label, "seed": seed, "kernel_path": path, "clean": clean, "robust": robust, "status": status}
    rows = [r("A", 0, "AVX2", 0.98, 0.90), r("B", 0, "AVX2", 0.97, 0.90), r("C", 0, "AVX2", 0.96, 0.85),   # met (tie on robust)
            r("A", 1, "AVX2", 0.97, 0.90), r("B", 1, "AVX2", 0.97, 0.80), r("C", 1, "AVX2", 0.90, 0.80),   # clean tie: not met
            r("A", 0, "DEFAULT", 0.99, 0.88), r("B", 0, "DEFAULT", 0.97, 0.89), r("C", 0, "DEFAULT", 0.9, 0.8),  # robust below B
            r("A", 1, "DEFAULT", 0.99, 0.95), r("B", 1, "DEFAULT", 0.97, 0.89),      # C's run missing: not met
            r("A", 2, "DEFAULT", 0.99, 0.95), r("B", 2, "DEFAULT", 0.9, 0.9), r("C", 2, "AVX2", 0.9, 0.9),  # C on another path
            r("A", 3, "DEFAULT", 0.99, 0.95), r("B", 3, "DEFAULT", 0.9, 0.9), r("C", 3, "DEFAULT", 0.9, 0.9, "running"),
            r("A", 4, "DEFAULT", 0.99, 0.95), r("B", 4, "DEFAULT", 0.9, 0.9), r("C", 4, "DEFAULT", 0.9, 0.9)]  # met
    res = evaluate_claims([claim], rows)[0]
    # seed 3's C is still running: that A run awaits it (pending), it is no miss
    assert res["paths"] == {"AVX2": (1, 2), "DEFAULT": (1, 4)} and not res["holds"]
    assert (res["pending"], res["awaiting"]) == (1, 1)
    assert claim.rule() == ("clean above B and C, robust not below B and C (same seed and kernel path); "
                            "in >= 50% of the runs on every kernel path")
    # seeds as read back from CSV (floats) pair with integer seeds
    rows[1]["seed"], rows[2]["seed"] = 0.0, "0"
    assert evaluate_claims([claim], rows)[0]["paths"]["AVX2"] == (1, 2)


def test_below_asks_a_strictly_lower_figure_than_every_partner():
    """``below``: a mitigation's best-last gap under the baseline's, run by run (a tie is not below)."""
    (claim,) = parse_claims([{"says": "TE narrows the gap", "group": "TE", "versus": ["PGD"], "below": ["pgd_gap"],
                              "at_least": 0.5}])
    rows = [{"label": lab, "seed": seed, "kernel_path": "AVX2", "status": "finished", "pgd_gap": gap}
            for lab, seed, gap in [("TE", 0, 0.01), ("PGD", 0, 0.05), ("TE", 1, 0.05), ("PGD", 1, 0.05),
                                   ("TE", 2, 0.08), ("PGD", 2, 0.02)]]
    assert evaluate_claims([claim], rows)[0]["paths"] == {"AVX2": (1, 3)}
    assert claim.rule() == "pgd_gap below PGD (same seed and kernel path); in >= 50% of the runs on every kernel path"
    with pytest.raises(ConfigError, match="needs both versus"):
        parse_claims([{"says": "x", "group": "TE", "below": ["pgd_gap"]}])


def test_evidence_merge_keeps_runs_of_earlier_sessions():
    """``claims_evidence.py record NAME DIRS --merge``: a claim study run over sessions keeps the runs recorded before;
    a run recorded again is replaced, unless the new copy has not ended and the old one had."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "claims_evidence.py"
    spec = importlib.util.spec_from_file_location("claims_evidence", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def row(trial, path, status, acc):
        return {"study": "s", "trial": trial, "kernel_path": path, "status": status, "test_pgd_acc": acc}
    old = [row("t0", "AVX2", "finished", 0.1), row("t1", "AVX2", "finished", 0.2), row("t2", "AVX2", "finished", 0.3)]
    new = [row("t1", "AVX2", "finished", 0.25), row("t2", "AVX2", "running", 0.0), row("t0", "DEFAULT", "finished", 0.4),
           row("t3", "AVX2", "finished", 0.5)]
    got = mod.merged(old, new)
    assert [(r["trial"], r["kernel_path"], r["test_pgd_acc"]) for r in got] == \
        [("t0", "AVX2", 0.1), ("t1", "AVX2", 0.25), ("t2", "AVX2", 0.3), ("t0", "DEFAULT", 0.4), ("t3", "AVX2", 0.5)]
    # a run recorded before it started (no kernel path) is replaced in place by its trial's new rows, not duplicated
    old = [row("t0", "AVX2", "finished", 0.1), row("t1", None, "pending", None), row("t2", None, "pending", None)]
    new = [row("t0", "AVX2", "finished", 0.1), row("t1", "AVX2", "finished", 0.3), row("t2", None, "pending", None)]
    got = mod.merged(old, new)
    assert [(r["trial"], r["kernel_path"], r["status"]) for r in got] == \
        [("t0", "AVX2", "finished"), ("t1", "AVX2", "finished"), ("t2", None, "pending")]
    # a fresh machine's folder lacks earlier sessions' runs: their pending rows do not duplicate the recorded ones
    old = [row("t0", "AVX2", "finished", 0.1), row("t0", "DEFAULT", "finished", 0.2), row("t1", None, "pending", None)]
    new = [row("t0", None, "pending", None), row("t1", "AVX2", "finished", 0.3), row("t2", None, "pending", None)]
    got = mod.merged(old, new)
    assert [(r["trial"], r["kernel_path"], r["status"]) for r in got] == \
        [("t0", "AVX2", "finished"), ("t0", "DEFAULT", "finished"), ("t1", "AVX2", "finished"), ("t2", None, "pending")]
    # seeds and epochs read back as integers, so a recorded file is rewritten unchanged
    from robustlab.report.evidence import read_csv, write_csv
    text = write_csv([{"study": "s", "trial": "t", "seed": 3, "lost_epoch": 5, "test_pgd_acc": 0.0}])
    assert write_csv(read_csv(text)) == text and read_csv(text)[0]["seed"] == 3


def test_a_claim_with_runs_to_come_reads_as_open_or_so_far():
    from robustlab.report.claims import claim_lines, verdict_word
    co, = parse_claims([{"says": "FGSM collapses", "group": "FGSM", "verdict": ["co"], "at_least": 0.6}])
    r = evaluate_claims([co], ROWS)[0]                       # 4 of 5 ended runs, 1 not ended
    assert verdict_word(r) == "holds so far" and claim_lines([r])[0].startswith("HOLDS so far: FGSM collapses")
    none_ended = evaluate_claims([co], [dict(row, status="running") for row in ROWS])[0]
    assert verdict_word(none_ended) == "open"
    done = evaluate_claims([co], [row for row in ROWS if row.get("status") in ("finished", "diverged")])[0]
    assert verdict_word(done) == "holds"


def test_a_run_awaiting_its_partner_or_its_evaluation_is_pending_not_a_miss():
    """A study run in parts: a finished run whose partner has not started (no kernel path yet), whose partner lacks
    the study evaluation's figure, or which lacks it itself, is counted when the figures are in; a partner that
    diverged or does not exist is a miss."""
    (claim,) = parse_claims([{"says": "A is cleaner than B", "group": "A", "versus": ["B"],
                              "above": ["eval_pgd_n500_last_clean_acc"], "at_least": 0.5}])

    def r(label, seed, path, clean, status="finished"):
        return {"label": label, "seed": seed, "kernel_path": path, "eval_pgd_n500_last_clean_acc": clean,
                "status": status}
    rows = [r("A", 0, "AVX2", 0.5), r("B", 0, "AVX2", 0.4),                 # met
            r("A", 1, "AVX2", 0.5), r("B", 1, None, None, "pending"),       # partner not started: awaiting
            r("A", 2, "AVX2", 0.5), r("B", 2, "AVX2", None),                # partner not evaluated: awaiting
            r("A", 3, "AVX2", None), r("B", 3, "AVX2", 0.4),                # own evaluation to come: awaiting
            r("A", 4, "AVX2", 0.5), r("B", 4, "AVX2", None, "diverged"),    # partner diverged: a miss
            r("A", 5, "AVX2", 0.5),                                         # no partner at all: a miss
            r("A", 6, "AVX2", None, "pending")]                             # not ended
    res = evaluate_claims([claim], rows)[0]
    assert res["paths"] == {"AVX2": (1, 3)} and (res["pending"], res["awaiting"]) == (4, 3)
    assert count_text(res) == ("1 of 3 runs (AVX2 1/3), 1 not ended, "
                               "3 ended awaiting a partner's run or an evaluation")
    # the figures come in: every run counts
    rows[3].update(kernel_path="AVX2", status="finished", eval_pgd_n500_last_clean_acc=0.45)
    rows[5]["eval_pgd_n500_last_clean_acc"] = 0.6
    rows[6]["eval_pgd_n500_last_clean_acc"] = 0.45
    assert evaluate_claims([claim], rows)[0]["paths"] == {"AVX2": (3, 6)}


def test_runs_block_shows_a_run_not_started_with_dashes():
    """A claim study's run that has not started has no kernel path or verdict yet: a dash, not Python's None."""
    from robustlab.report.evidence import runs_markdown
    keys = ["peak_clean_acc", "test_clean_acc", "test_pgd_acc", "test_fgsm_acc", "best_pgd", "final_robust_acc",
            "final_clean_acc", "collapse_epoch", "best_pgd_epoch"]
    rows = [{"label": "ARAT", "seed": 2, "kernel_path": None, "status": "pending", "collapse": None,
             **dict.fromkeys(keys)}]
    table = runs_markdown(rows)
    assert "| ARAT | 2 | – | pending | – |" in table and "None" not in table
