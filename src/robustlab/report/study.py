"""The study report: table, per-group curves, final metric against each swept numeric key (mean and
min-max over seeds), a heatmap when two numeric keys are swept, and, after ``robustlab eval STUDY_DIR``, the
evaluation's clean and robust accuracy of every group's best and last checkpoints.

Groups: trials that differ only in ``seed`` and in the numeric keys on the x-axis are one group (one
line), labelled by their ``label`` (if the study gives one) or their other varying keys.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.schema import parse_number
from robustlab.report.format import PCT, TEXT, describe_value, fmt, kind_of
from robustlab.report.runs import _plt, write_comparison_report
from robustlab.report.table import study_claims, study_rows
from robustlab.core.layout import trial_dir

FINAL = ("test_pgd_acc", "final PGD accuracy (test subset, last epoch)")


def _num(v):
    try:
        return parse_number(v, "value")
    except ConfigError:
        return None


def numeric_keys(keys: list[str], rows: list[dict]) -> list[str]:
    out = []
    for k in keys:
        if k in ("seed", "label"):
            continue
        vals = [_num(r[k]) for r in rows if r[k] is not None]
        if vals and all(v is not None for v in vals) and len(set(vals)) > 1:
            out.append(k)
    return out


def group_label(row: dict, keys: list[str], exclude: set[str]) -> str:
    if row.get("label"):
        return str(row["label"])
    parts = [f"{k.split('.')[-1]}={row[k]}" for k in keys if k not in exclude and k != "seed" and row[k] is not None]
    return " ".join(parts) or "all"


def _agg(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return math.nan, math.nan, math.nan
    return statistics.fmean(vals), min(vals), max(vals)


def plot_metric_vs_key(rows, keys, key, out_png: Path) -> None:
    plt = _plt()
    others = set(numeric_keys(keys, rows)) - {key}
    groups: dict[str, dict[float, list]] = {}
    for r in rows:
        if r["status"] != "finished" or _num(r[key]) is None:
            continue                 # unfinished, or a trial whose list entry does not set this key
        label = group_label(r, keys, {key} | others) + "".join(f" {k.split('.')[-1]}={r[k]}" for k in others)
        groups.setdefault(label, {}).setdefault(_num(r[key]), []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, (metric, title) in zip(axes, [("test_pgd_acc", "PGD accuracy"), ("test_clean_acc", "clean accuracy")]):
        for label, by_x in groups.items():
            xs = sorted(by_x)
            stats = [_agg([r[metric] for r in by_x[x]]) for x in xs]
            line, = ax.plot(xs, [100 * s[0] for s in stats], marker="o", label=label)
            ax.fill_between(xs, [100 * s[1] for s in stats], [100 * s[2] for s in stats], alpha=0.2, color=line.get_color())
        ax.set(xlabel=key, ylabel=f"last-epoch {title} (%)", title=f"last-epoch {title} (monitor) vs {key}\n"
               "mean, shaded min–max over seeds", ylim=(0, 100))
        ax.title.set_fontsize(9)
    from robustlab.report.runs import _legend_below
    _legend_below(fig, axes, ncol=3)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def final_metric(rows) -> tuple[str, str]:
    """The robust accuracy to map: the final evaluation of the last checkpoint when every finished trial has
    one (the stronger attack: the per-epoch PGD-10 monitor can overestimate a collapsed model a lot), else
    the last epoch's monitor PGD accuracy."""
    done = [r for r in rows if r["status"] == "finished"]
    if done and all(r.get("final_robust_acc") is not None for r in done):
        return "final_robust_acc", f"final {done[0].get('final_protocol') or 'eval'} accuracy (last checkpoint)"
    return "test_pgd_acc", "last-epoch PGD accuracy (monitor)"


def plot_heatmap(rows, keys, kx, ky, out_png: Path) -> None:
    plt = _plt()
    metric, title = final_metric(rows)
    groups: dict[str, list] = {}
    for r in rows:
        if r["status"] == "finished":
            groups.setdefault(group_label(r, keys, {kx, ky}), []).append(r)
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(5 * max(1, len(groups)), 4), squeeze=False)
    for ax, (label, grp) in zip(axes[0], groups.items()):
        xs = sorted({_num(r[kx]) for r in grp})
        ys = sorted({_num(r[ky]) for r in grp})
        grid = [[_agg([r[metric] for r in grp if _num(r[kx]) == x and _num(r[ky]) == y])[0] for x in xs] for y in ys]
        grid = [[100 * v for v in row] for row in grid]
        im = ax.imshow(grid, origin="lower", vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(xs)), [f"{x:.3g}" for x in xs])
        ax.set_yticks(range(len(ys)), [f"{y:.3g}" for y in ys])
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w" if v < 50 else "k", fontsize=8)
        ax.set(xlabel=kx, ylabel=ky, title=f"{label}:\n{title} (%, mean over seeds)")
        ax.title.set_fontsize(9)
        fig.colorbar(im, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


COLLAPSE_PANELS = [("CO", lambda r: r["collapse"] == "co"), ("training failure", lambda r: r["collapse"] == "failure"),
                   ("robustness lost", lambda r: _num(r.get("lost_epoch")) is not None)]


def cell_counts(rows, kx, ky, counted) -> list[list[list[bool]]]:
    """``[y][x]`` -> one bool per run of that cell (``counted(run)``); x and y the sorted values of the keys."""
    xs = sorted({_num(r[kx]) for r in rows})
    ys = sorted({_num(r[ky]) for r in rows})
    return [[[bool(counted(r)) for r in rows if _num(r[kx]) == x and _num(r[ky]) == y] for x in xs] for y in ys]


def plot_collapse_heatmap(rows, keys, kx, ky, out_png: Path) -> bool:
    """Per group, the fraction of runs in each cell whose robust accuracy collapsed: CO (clean accuracy kept; top
    row), training failure (clean accuracy fell too; middle row), both by robustlab.diagnostics.collapse_verdict on
    the test curves, and robustness lost (bottom row: the test PGD accuracy at or below the floor from some epoch to
    the end, ``lost_epoch``, robustlab.diagnostics.robustness_lost_epoch: the collapse at CPU scale, where no robust
    peak reaches the CO rule's), annotated ``k/n``. One run per cell reads as 0 or 1: sweep seeds and kernel paths
    for a fraction. Returns False (nothing drawn) when no run has a verdict."""
    groups: dict[str, list] = {}
    for r in rows:
        if r["status"] in ("finished", "diverged") and r.get("collapse"):
            groups.setdefault(group_label(r, keys, {kx, ky}), []).append(r)
    if not groups:
        return False
    plt = _plt()
    panels = COLLAPSE_PANELS
    fig, axes = plt.subplots(len(panels), len(groups), figsize=(4.6 * len(groups), 3.7 * len(panels)), squeeze=False)
    for col, (label, grp) in enumerate(groups.items()):
        xs = sorted({_num(r[kx]) for r in grp})
        ys = sorted({_num(r[ky]) for r in grp})
        for row_i, (name, counted) in enumerate(panels):
            ax = axes[row_i][col]
            counts = cell_counts(grp, kx, ky, counted)
            grid = [[sum(c) / len(c) if c else math.nan for c in row] for row in counts]
            im = ax.imshow(grid, origin="lower", vmin=0, vmax=1, cmap="magma", aspect="auto")
            ax.set_xticks(range(len(xs)), [f"{x:.3g}" for x in xs])
            ax.set_yticks(range(len(ys)), [f"{y:.3g}" for y in ys])
            for i, row in enumerate(counts):
                for j, c in enumerate(row):
                    if c:
                        ax.text(j, i, f"{sum(c)}/{len(c)}", ha="center", va="center", fontsize=8,
                                color="w" if sum(c) / len(c) < 0.5 else "k")
            ax.set(xlabel=kx, ylabel=ky, title=f"{label}: fraction of runs in {name}")
            ax.title.set_fontsize(9)
            fig.colorbar(im, ax=ax, label=f"runs in {name} (fraction)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return True


def plot_eval_summary(rows, keys, protocol: str, out_png: Path) -> bool:
    """``robustlab eval STUDY_DIR``'s figures per group (mean over seeds, whiskers min-max): clean and robust
    accuracy of the best and the last checkpoint under one protocol, with the training monitor's last-epoch PGD
    accuracy as a marker. Best above last shows robust overfitting; the marker above the last robust bar shows
    how much the monitor's weaker attack overestimated. Returns False (and draws nothing) without eval figures."""
    groups: dict[str, list] = {}
    for r in rows:
        if r.get("eval_best_robust_acc") is not None or r.get("eval_last_robust_acc") is not None:
            groups.setdefault(group_label(r, keys, set()), []).append(r)
    if not groups:
        return False
    plt = _plt()
    bars = [("eval_best_clean_acc", "best: clean", "#9ecae1"), ("eval_best_robust_acc", "best: robust", "#3182bd"),
            ("eval_last_clean_acc", "last: clean", "#fdae6b"), ("eval_last_robust_acc", "last: robust", "#e6550d")]
    height = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.66 * len(groups)))
    labels = list(groups)
    for i, (col, name, color) in enumerate(bars):
        stats = [_agg([r.get(col) for r in groups[g]]) for g in labels]
        ys = [k + (i - (len(bars) - 1) / 2) * height for k in range(len(labels))]
        means = [s[0] for s in stats]
        err = [[m - s[1] for m, s in zip(means, stats)], [s[2] - m for m, s in zip(means, stats)]]
        ax.barh(ys, [100 * m for m in means], height=height, color=color, label=name,
                xerr=[[100 * e for e in side] for side in err], error_kw={"elinewidth": 0.8})
    mon = [_agg([r.get("test_pgd_acc") for r in groups[g]])[0] for g in labels]
    ax.plot([100 * m for m in mon], [k + 1.5 * height for k in range(len(labels))], "kx", label="monitor PGD (last epoch)")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), xlabel="accuracy (%)", title=f"robustlab eval: {protocol} (mean over seeds, whiskers min–max)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return True


def write_study_report(study_dir: str | Path) -> Path:
    from robustlab.core.io import read_json

    study_dir = Path(study_dir)
    manifest = read_json(study_dir / "study.json")
    header, rows = study_rows(study_dir)
    keys = manifest["keys"]
    num = numeric_keys(keys, rows)
    out = study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    extra = []
    for k in num:
        name = f"final_vs_{k.replace('.', '_')}.png"
        plot_metric_vs_key(rows, keys, k, out / name)
        extra.append((f"Final accuracy vs {k}", name))
    if len(num) == 2:
        plot_heatmap(rows, keys, num[0], num[1], out / "heatmap.png")
        extra.append((f"Heatmap: {num[0]} x {num[1]}", "heatmap.png"))
        if plot_collapse_heatmap(rows, keys, num[0], num[1], out / "collapse_heatmap.png"):
            extra.append((f"Collapse: fraction of runs in CO, in training failure and with robustness lost, "
                          f"{num[0]} x {num[1]} (k/n runs)",
                          "collapse_heatmap.png"))
    protocol = next((r["eval_protocol"] for r in rows if r.get("eval_protocol")), None)
    if protocol and plot_eval_summary(rows, keys, protocol, out / "eval.png"):
        extra.append((f"Evaluation ({protocol}): best and last checkpoints", "eval.png"))
    groups: dict[str, list[Path]] = {}
    for r in rows:
        if (trial_dir(study_dir, r["trial"]) / "metrics.jsonl").is_file():
            groups.setdefault(group_label(r, keys, set()), []).append(trial_dir(study_dir, r["trial"]))
    status = {s: sum(r["status"] == s for r in rows) for s in sorted({str(r["status"]) for r in rows})}
    notes = ((manifest.get("title") + ". ") if manifest.get("title") else "") + (
        f"Study '{manifest['name']}': {len(rows)} trials ({', '.join(f'{v} {k}' for k, v in status.items())}); "
        f"varying keys: {', '.join(keys) or 'none'}. 'CO': test PGD accuracy fell below a quarter of its earlier peak "
        "and stayed there while clean accuracy stayed at >= 0.9 of its level at that peak (at the onset and the last epoch) "
        "(robustlab.diagnostics.co_onset); a run that lost clean accuracy too is counted as a training failure.")
    from robustlab.report.claims import claim_lines
    claims = claim_lines(study_claims(study_dir, rows))
    columns = trial_columns(header, rows, keys)
    table = [[_cell(h, r[h]) for h in columns] for r in rows]
    return write_comparison_report(out, groups, f"robustlab study: {manifest['name']}", notes, extra_images=extra,
                                   trial_table=([_title(h) for h in columns], table),
                                   links=[("table.csv: every trial, every column", "../table.csv")],
                                   eval_table=study_eval_rows(study_dir, manifest) or None, claims=claims)


SHOWN = ["status", "collapse", "kernel_path", "epochs", "test_clean_acc", "test_pgd_acc", "test_fgsm_acc", "best_pgd", "best_pgd_epoch",
         "pgd_gap", "final_protocol", "final_clean_acc", "final_robust_acc", "final_best_robust_acc",
         "eval_best_robust_acc", "eval_last_robust_acc", "eval_flags", "train_seconds"]


def trial_columns(header: list[str], rows: list[dict], keys: list[str]) -> list[str]:
    """The runs table's columns: the trial, the study's keys that vary, then the main figures (table.csv has them
    all); a column empty in every row is left out."""
    varying = [k for k in keys if len({describe_value(r.get(k)) for r in rows}) > 1]
    cols = ["trial", *varying, *[h for h in SHOWN if h in header]]
    return [c for c in cols if c == "trial" or any(r.get(c) not in (None, "") for r in rows)]


def _title(column: str) -> str:
    short = column.split(".")[-1] if "." in column else column
    return short.replace("_", " ") + (" (%)" if kind_of(column) == PCT and "." not in column else "")


TRIAL_NAME_CHARS = 40


def _cell(column: str, value) -> str:
    if column == "trial" and len(str(value)) > TRIAL_NAME_CHARS:   # the number prefix keeps it unique; table.csv has it whole
        return str(value)[:TRIAL_NAME_CHARS - 1] + "…"
    return fmt(value, TEXT if "." in column or column in ("trial", "status") else kind_of(column))


def study_eval_rows(study_dir: Path, manifest: dict) -> list[list[str]]:
    """The evaluations every trial holds (robustlab eval STUDY_DIR or per run), one row each."""
    from robustlab.report.evals import eval_rows, run_evaluations
    rows = []
    for t in manifest["trials"]:
        rows += [[t["name"], *row] for row in eval_rows(run_evaluations(trial_dir(study_dir, t["name"])), fmt)]
    return rows
