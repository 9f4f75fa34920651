"""Evidence files: the table of runs behind a claim (one row per run: seed, CPU kernel path, machine, verdict and
figures), and the Markdown that README and docs show from it, so that their text cannot drift from the measurements.

``benchmarks/claims_evidence.py record NAME STUDY_DIR...`` writes ``docs/evidence/NAME.csv`` (the runs) and
``NAME.claims.yaml`` (the claims of the study, robustlab.report.claims); ``render`` rewrites every block
``<!-- evidence:NAME:KIND -->`` ... ``<!-- /evidence:NAME:KIND -->`` in README.md and docs/*.md from those files,
``check`` fails when one differs (a test runs it). KIND: ``claims`` (one line per claim with its counts), ``groups``
(per group and kernel path: runs, collapse verdicts, final figures), ``runs`` (every run), ``map`` (per group, a
table over the two swept keys of the setting, e.g. the CO map's beta x eps), ``evals`` (per group and kernel path:
every ``robustlab eval STUDY_DIR`` figure of the last checkpoints the runs carry, e.g. PGD-50-10 and AutoAttack).
The CSV holds the fixed :data:`COLUMNS` and, after them, every ``eval_<key>_*_acc`` column of the study tables.
"""
from __future__ import annotations

import csv
import io
import math
import re
import statistics
from pathlib import Path

from robustlab.report.claims import Claim, count_text, evaluate_claims, verdict_word

COLUMNS = ["study", "trial", "label", "setting", "seed", "kernel_path", "cpu", "status", "collapse", "collapse_epoch",
           "peak_clean_acc", "lost_epoch", "elle_rise_epoch", "linearity_lead", "test_clean_acc", "test_pgd_acc", "test_fgsm_acc", "best_pgd", "best_pgd_epoch",
           "final_protocol", "final_clean_acc", "final_robust_acc", "final_best_robust_acc", "robustlab_commit"]
NUMERIC = {"seed", "collapse_epoch", "peak_clean_acc", "lost_epoch", "elle_rise_epoch", "linearity_lead", "test_clean_acc", "test_pgd_acc", "test_fgsm_acc", "best_pgd",
           "best_pgd_epoch", "final_clean_acc", "final_robust_acc", "final_best_robust_acc"}


def study_evidence(study_dir: Path) -> list[dict]:
    """The evidence rows of one study folder (every trial; those that have not ended keep their status)."""
    from robustlab.core.io import read_json
    from robustlab.core.layout import load_manifest, trial_dir
    from robustlab.report.table import study_rows

    manifest = load_manifest(study_dir)
    trials = {t["name"]: t for t in manifest["trials"]}
    out = []
    for r in study_rows(study_dir)[1]:
        env_file = trial_dir(study_dir, r["trial"]) / "env.json"
        env = read_json(env_file) if env_file.is_file() else {}
        row = {c: r.get(c) for c in COLUMNS}
        row.update({c: v for c, v in r.items() if _is_eval_figure(c)})
        over = trials[r["trial"]]["overrides"]
        setting = " ".join(f"{k}={v}" for k, v in over.items() if k not in NOT_SETTING and not k.startswith("method.name"))
        row.update(study=manifest["name"], seed=trials[r["trial"]]["config"]["seed"], label=r.get("label") or r["trial"],
                   setting=setting, robustlab_commit=env.get("git_commit"))
        out.append(row)
    return out


NOT_SETTING = {"label", "seed", "train.kernel_path"}
EVAL_FIGURE = re.compile(r"eval_(?P<key>\w+)_(?P<which>best|last)_(?P<what>clean|robust)_acc")


def _is_eval_figure(column: str) -> bool:
    """A keyed study-evaluation figure (robustlab.report.table): ``eval_pgd_50_10_n500_last_robust_acc``."""
    return EVAL_FIGURE.fullmatch(column) is not None


def write_csv(rows: list[dict]) -> str:
    extra = list(dict.fromkeys(c for r in rows for c in r if _is_eval_figure(c) and r[c] is not None))
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS + extra, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r[c]) for c in COLUMNS + extra})
    return buf.getvalue()


def _number(text: str) -> int | float:
    """``"3"`` -> 3 (seeds and epochs are written back as they were), ``"0.25"`` -> 0.25."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_csv(text: str) -> list[dict]:
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        rows.append({k: (None if v == "" else _number(v) if k in NUMERIC or _is_eval_figure(k) else v) for k, v in r.items()})
    return rows


def _pct(values) -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "–"
    mean = statistics.fmean(vals)
    return f"{100 * mean:.1f} ({100 * min(vals):.1f}–{100 * max(vals):.1f})" if len(vals) > 1 else f"{100 * mean:.1f}"


def claims_markdown(claims: list[Claim], rows: list[dict]) -> str:
    lines = []
    for r in evaluate_claims(claims, rows):
        lines.append(f"- **{verdict_word(r)}**: {r['claim'].says}: {count_text(r)}.")
    return "\n".join(lines)


def _namer(rows: list[dict]):
    """A run's group name: its label, plus its setting where one label covers several settings (e.g. a grid)."""
    settings: dict[str, set] = {}
    for r in rows:
        settings.setdefault(r["label"], set()).add(r.get("setting") or "")
    return lambda r: r["label"] + (f" ({r['setting']})" if len(settings[r["label"]]) > 1 and r.get("setting") else "")


def _by_group_and_path(rows: list[dict]) -> list[tuple[tuple[str, str], list[dict]]]:
    """The ended runs per (group name, kernel path): groups in the order they first appear, paths sorted."""
    groups: dict[tuple, list[dict]] = {}
    name = _namer(rows)
    for r in rows:
        if r["status"] in ("finished", "diverged"):
            groups.setdefault((name(r), r["kernel_path"] or "?"), []).append(r)
    order = list(dict.fromkeys(k[0] for k in groups))
    return sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1]))


def groups_markdown(rows: list[dict]) -> str:
    protocol = next((r["final_protocol"] for r in rows if r.get("final_protocol")), "final evaluation")
    lines = [f"| group | kernel path | runs | CO | training failure | no collapse | diverged | {protocol} robust, last (%) | "
             "clean, last (%) | best per-epoch PGD (%) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (label, path), g in _by_group_and_path(rows):
        n = len(g)
        count = {v: sum(r["collapse"] == v for r in g) for v in ("co", "failure", "none")}
        lines.append(f"| {label} | {path} | {n} | {count['co']}/{n} | {count['failure']}/{n} | {count['none']}/{n} | "
                     f"{sum(r['status'] == 'diverged' for r in g)}/{n} | {_pct(r['final_robust_acc'] for r in g)} | "
                     f"{_pct(r['final_clean_acc'] for r in g)} | {_pct(r['best_pgd'] for r in g)} |")
    return "\n".join(lines)


def runs_markdown(rows: list[dict]) -> str:
    lines = ["| group | seed | kernel path | status | verdict (epoch) | peak clean | last clean | last PGD | last FGSM | "
             "best PGD (epoch) | final robust | final clean |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v):
        return "–" if v is None else f"{v:.3f}"
    name = _namer(rows)
    for r in rows:
        ep = f" ({int(r['collapse_epoch'])})" if r.get("collapse_epoch") is not None else ""
        best_ep = f" ({int(r['best_pgd_epoch'])})" if r.get("best_pgd_epoch") is not None else ""
        lines.append(f"| {name(r)} | {int(r['seed'])} | {r['kernel_path'] or '–'} | {r['status']} | {r['collapse'] or '–'}{ep} | "
                     f"{f(r['peak_clean_acc'])} | {f(r['test_clean_acc'])} | {f(r['test_pgd_acc'])} | {f(r['test_fgsm_acc'])} | "
                     f"{f(r['best_pgd'])}{best_ep} | {f(r['final_robust_acc'])} | {f(r['final_clean_acc'])} |")
    return "\n".join(lines)


def map_markdown(rows: list[dict]) -> str:
    """Per group, a table over the two keys of the setting (e.g. beta down, eps across): in each cell the runs in CO
    and in training failure (k/n over seeds and kernel paths) and the mean final robust accuracy."""
    blocks = []
    ended = [r for r in rows if r["status"] in ("finished", "diverged")]
    for label in dict.fromkeys(r["label"] for r in ended):
        cells: dict[tuple, list[dict]] = {}
        for r in (r for r in ended if r["label"] == label):
            kv = dict(p.split("=", 1) for p in (r.get("setting") or "").split())
            if len(kv) != 2:
                continue
            (kx, x), (ky, y) = sorted(kv.items())          # e.g. data.inject.beta (rows), method.eps (columns)
            cells.setdefault((float(x), float(y)), []).append(r)
        if not cells:
            continue
        xs, ys = sorted({c[0] for c in cells}), sorted({c[1] for c in cells})
        lines = [f"**{label}** (cells: CO k/n · training failure k/n · mean final robust %)", "",
                 f"| {kx.split('.')[-1]} \\ {ky.split('.')[-1]} | " + " | ".join(f"{y:g}" for y in ys) + " |",
                 "|---|" + "---|" * len(ys)]
        for x in xs:
            parts = []
            for y in ys:
                g = cells.get((x, y), [])
                if not g:
                    parts.append("–")
                    continue
                co, fail = sum(r["collapse"] == "co" for r in g), sum(r["collapse"] == "failure" for r in g)
                rob = [r["final_robust_acc"] for r in g if r["final_robust_acc"] is not None]
                parts.append(f"{co}/{len(g)} · {fail}/{len(g)} · " + (f"{100 * statistics.fmean(rob):.0f}" if rob else "–"))
            lines.append(f"| {x:g} | " + " | ".join(parts) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


WORDS = {"pgd": "PGD", "fgsm": "FGSM", "autoattack": "AutoAttack", "cw": "CW", "dlr": "DLR"}


def _protocol_title(key: str) -> str:
    """``pgd_50_10_autoattack_n100`` -> ``PGD-50-10+AutoAttack, 100 points`` (robustlab.eval.study.evaluation_key)."""
    protocol, _, n = key.rpartition("_n")
    parts: list[str] = []
    for token in protocol.split("_"):
        if token.isdigit() and parts:
            parts[-1] += f"-{token}"
        else:
            parts.append(WORDS.get(token, token))
    return "+".join(parts) + (f", {n} points" if n.isdigit() else "")


def evals_markdown(rows: list[dict]) -> str:
    """Per group and kernel path (mean, min–max over seeds): every evaluation figure of the last checkpoint the runs
    carry (``eval_<key>_last_*``; the key names the protocol and the points)."""
    figures = list(dict.fromkeys(c for r in rows for c in r if _is_eval_figure(c) and r[c] is not None
                                 and EVAL_FIGURE.fullmatch(c)["which"] == "last"))
    titles = [f"{_protocol_title(EVAL_FIGURE.fullmatch(c)['key'])}: {EVAL_FIGURE.fullmatch(c)['what']} (%)" for c in figures]
    lines = ["| group | kernel path | runs | " + " | ".join(titles) + " |", "|---|---|---|" + "---|" * len(figures)]
    for (label, path), g in _by_group_and_path(rows):
        lines.append(f"| {label} | {path} | {len(g)} | " + " | ".join(_pct(r.get(c) for r in g) for c in figures) + " |")
    return "\n".join(lines)


BLOCK = re.compile(r"(<!-- evidence:(?P<name>[\w.-]+):(?P<kind>claims|groups|runs|map|evals) -->\n)(?P<body>.*?)"
                   r"(<!-- /evidence:(?P=name):(?P=kind) -->)", re.S)


def render_blocks(text: str, load) -> str:
    """``text`` with every evidence block rewritten; ``load(name)`` gives ``(claims, rows)`` of evidence NAME, or
    None to leave that block as it is."""
    def body(m):
        loaded = load(m["name"])
        if loaded is None:
            return m.group(0)
        claims, rows = loaded
        kind = m["kind"]
        md = {"claims": lambda: claims_markdown(claims, rows), "groups": lambda: groups_markdown(rows),
              "runs": lambda: runs_markdown(rows), "map": lambda: map_markdown(rows),
              "evals": lambda: evals_markdown(rows)}[kind]()
        return f"{m.group(1)}{md}\n{m.group(5)}"
    return BLOCK.sub(body, text)
