"""The transfer report: what the matrix shows (per surrogate label: mean success over targets, mean ± sd over the
runs sharing the label, with sharpness), a heatmap per attack, success against sharpness, then the tables."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from robustlab.report.format import PCT, fmt, spread
from robustlab.report.runs import _legend_below, _plt, _write_pages


MARKERS = ("o", "s", "^", "D")


def mean_finite(values) -> float:
    """The mean of the values that are numbers (None and NaN left out); NaN when none is."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(vals) if vals else math.nan


def write_transfer_report(out: Path, results: dict) -> Path:
    report = Path(out) / "report"
    report.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    sur, tar = results["surrogates"], results["targets"]
    sharp = results.get("sharpness", {})
    images, tables, findings = [], [], []
    for c in results.get("claims") or []:          # what the study set out to show, counted, first
        per = ", ".join(f"{p} {k}/{n}" for p, (k, n) in c["paths"].items())
        unit = "seeds" if c.get("group") == "sharpness vs transfer" else "surrogates"
        findings.append(f"Claim {'HOLDS' if c['holds'] else 'does not hold'}: {c['says']}: {c['met']} of {c['runs']} "
                        f"{unit} ({per}) [rule: {c['rule']}]")
    for line in results.get("weak_targets") or []:
        findings.append(f"FLAG: {line}.")
    findings.append(f"{len(sur)} surrogates x {len(tar)} targets on {results['n_examples']} examples "
                    f"({'correct on every target' if results['examples'] == 'correct_on_targets' else 'all test points'}); "
                    "success rate 'all' = the fraction of these examples the target misclassifies after the attack; "
                    "'correct' = the same among the examples both the surrogate and the target classify correctly.")
    for label, m in results["attacks"].items():
        rows = m["success_all"]
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.9 * len(tar)), 1.6 + 0.45 * len(sur)))
        grid = [[100 * v for v in row] for row in rows]
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="magma", aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="w" if v < 60 else "k")
        ax.set_xticks(range(len(tar)), [f"{t['key']} {t['label']}" for t in tar], rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(sur)), [f"{s['key']} {s['label']}" for s in sur], fontsize=7)
        a = m["attack"]
        ax.set_title(f"{label}: transfer success (%), eps {a['eps']:.4g} {a['norm']}, {a['steps']} steps", fontsize=9)
        fig.colorbar(im, ax=ax, label="success rate (%), all examples")
        fig.tight_layout()
        name = f"heatmap_{label}.png"
        fig.savefig(report / name, dpi=90)
        plt.close(fig)
        images.append((f"{label}: success rate of each surrogate (rows) on each target (columns)", name))
        by_label: dict[str, list[int]] = {}
        for i, s in enumerate(sur):
            by_label.setdefault(s["label"], []).append(i)
        summary = []
        for group, idx in by_label.items():
            means = [mean_finite(rows[i]) for i in idx]
            eigs = [sharp.get(sur[i]["key"], {}).get("hessian_top_eig") for i in idx]
            summary.append([group, str(len(idx)), spread(means, PCT),
                            spread([mean_finite(m["success_correct"][i]) for i in idx], PCT), spread(eigs, "num"),
                            spread([sharp.get(sur[i]["key"], {}).get("hessian_trace") for i in idx], "num")])
            findings.append(f"{label}, {group}: mean success over {len(tar)} targets {spread(means, PCT)} % "
                            f"({len(idx)} run(s)); top Hessian eigenvalue {spread(eigs, 'num')}.")
        tables.append((f"{label}: per surrogate label (mean over targets; mean ± sd (min–max) over its runs)",
                       ["surrogate", "runs", "success, all (%)", "success, correct (%)", "top eigenvalue", "trace"], summary))
        for den in ("success_all", "success_correct"):
            tables.append((f"{label}: matrix, {results['denominators'][den]} (%)",
                           ["surrogate"] + [f"{t['key']} {t['label']}" for t in tar],
                           [[f"{s['key']} {s['label']}"] + [fmt(v, PCT) for v in m[den][i]] for i, s in enumerate(sur)]))
        if any(sharp.get(s["key"]) for s in sur):
            fig, ax = plt.subplots(figsize=(6, 4.4))
            for k, (group, idx) in enumerate(by_label.items()):
                xs = [sharp.get(sur[i]["key"], {}).get("hessian_top_eig") for i in idx]
                ys = [100 * mean_finite(rows[i]) for i in idx]
                pts = [(a_, b_) for a_, b_ in zip(xs, ys) if a_ is not None]
                if pts:                  # one colour and marker per label (tab10 alone repeats after 10 labels)
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], MARKERS[k // 10 % len(MARKERS)],
                            color=plt.get_cmap("tab10")(k % 10), label=group)
            ax.set(xlabel="top Hessian eigenvalue of the training loss", ylabel="mean success over targets (%)",
                   title=f"{label}: transfer against sharpness (one point per surrogate)")
            ax.title.set_fontsize(9)
            _legend_below(fig, [ax], ncol=3)
            name = f"sharpness_{label}.png"
            fig.savefig(report / name, dpi=90)
            plt.close(fig)
            images.append((f"{label}: mean success over targets against sharpness", name))
            pooled = results.get("sharpness_transfer") or {}
            if f"rank_{label}_top_eig" in pooled:
                findings.append(f"{label}: Spearman's rho between sharpness and success (all), over all surrogates: " + "; ".join(
                    f"{name_} {fmt(pooled[f'rank_{label}_{m}'], 'num')} (n = {pooled[f'n_{label}_{m}']}, "
                    f"permutation p = {fmt(pooled[f'p_{label}_{m}'], 'num')})"
                    for m, name_ in (("top_eig", "top eigenvalue"), ("trace", "trace"))) +
                    " (negative: flatter surrogates transfer better).")
            ranks = results.get("rank_rows") or []
            if ranks:
                tables.append((f"{label}: sharpness against success (all), Spearman's rho per seed and kernel path",
                               ["seed", "kernel path", "surrogates", "rho (top eigenvalue)", "rho (trace)"],
                               [[str(r["seed"]), str(r["kernel_path"]), str(r[f"n_{label}_top_eig"]),
                                 fmt(r[f"rank_{label}_top_eig"], "num"), fmt(r[f"rank_{label}_trace"], "num")] for r in ranks]))
    accuracy = results.get("target_accuracy") or {}
    tables.append(("Models (target accuracy: clean, on the whole test split)", ["key", "role", "label", "target accuracy (%)", "source"],
                   [[e["key"], role, e["label"], fmt(accuracy[e["key"]], PCT) if e["key"] in accuracy else "",
                     " ".join(f"{k}={v}" for k, v in e["source"].items() if v is not None)]
                    for role, group in (("surrogate", sur), ("target", tar)) for e in group]))
    links = [(f"matrix_{label}_{d}.csv", f"../matrix_{label}_{d}.csv") for label in results["attacks"] for d in ("all", "correct")]
    _write_pages(report, f"robustlab transfer study: {results['name']}", findings, images, tables, links)
    return report / "report.html"
