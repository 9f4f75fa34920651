"""Per-run and per-group reports drawn from run folders (metrics.jsonl, results.json, config.yaml, eval/).

A report opens with what the runs show (in words, with counts), then the figures, then the tables. Accuracies
print as percentages; every figure names its attack, eps and number of points; evaluations made with
``robustlab eval`` appear beside the training's own monitor and final evaluation."""
from __future__ import annotations

import html
import math
import statistics
from pathlib import Path

from robustlab.core.io import write_text
from robustlab.diagnostics import collapse_verdict_in_metrics
from robustlab.report.evals import EVAL_HEADER, eval_rows, run_evaluations, sanity_summary
from robustlab.report.format import INT, PCT, SECONDS, fmt, html_page, html_table, kind_of, md_table, spread
from robustlab.report.views import RunView, load_run

CURVES = [("test_clean_acc", "clean"), ("test_pgd_acc", "PGD"), ("test_fgsm_acc", "FGSM")]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _legend_below(fig, axes, ncol: int = 4) -> None:
    """One legend under the panels (never over the curves), from the first axes that has labelled lines."""
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=min(ncol, len(labels)), fontsize=8, frameon=False)
            rows = -(-len(labels) // min(ncol, len(labels)))
            fig.tight_layout(rect=(0, 0.05 + 0.05 * rows, 1, 1))
            return
    fig.tight_layout()


def _mark_onsets(ax, runs: list[RunView], color, label_prefix: str = "") -> None:
    """Each run's CO onset as a dotted line, labelled with its seed (or 'failure' onsets dashed)."""
    for r in runs:
        verdict, epoch = collapse_verdict_in_metrics(r.metrics)
        if epoch is None:
            continue
        ax.axvline(epoch, color=color, ls=":" if verdict == "co" else "--", lw=1)
        tag = f"{label_prefix}CO" if verdict == "co" else f"{label_prefix}failure"
        ax.annotate(f"{tag} s{r.seed}", (epoch, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                    va="top", ha="right", color=color)


def write_run_report(run_dir: str | Path) -> Path:
    """report/curves.png, report/report.md and report/report.html for one run folder."""
    run = load_run(run_dir)
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    title = (f"robustlab run {run.path.resolve().name}: {run.method}"
             + (f" eps {run.eps:.4g}" if isinstance(run.eps, (int, float)) else "") + f" on {run.data}")
    evals = run_evaluations(run.path)
    images = []
    if run.metrics:
        _run_curves(run, out / "curves.png")
        images.append(("Curves", "curves.png"))
    findings = run_findings(run, evals)
    tables = []
    if evals:
        tables.append(("Evaluations (robustlab eval)", EVAL_HEADER, eval_rows(evals, fmt)))
    if run.final.last:
        rows = [[which, fmt(f.clean_acc, PCT), fmt(f.robust_acc, PCT)] for which, f in run.final.checkpoints()]
        tables.append((f"Final evaluation at the end of training ({run.final.text()})",
                       ["checkpoint", "clean (%)", "robust (%)"], rows))
    if run.metrics:
        keys = [k for k in run.metrics[0] if k not in ("epoch", "co_fired")]
        tables.append((f"Per-epoch metrics (monitor: {run.monitor.text()}; accuracies in %)", ["epoch"] + keys,
                       [[fmt(m.get("epoch"), INT)] + [fmt(m.get(k), kind_of(k)) for k in keys] for m in run.metrics]))
    _write_pages(out, title, findings, images, tables)
    return out


def run_findings(run: RunView, evals: list[dict]) -> list[str]:
    lines = [f"Status: {run.status} after {run.epochs_completed} of {run.epochs if run.epochs is not None else '?'} epochs"
             + (f" ({run.message})" if run.message else "") + "."]
    if not run.metrics:
        lines.append("No epoch has been recorded yet: there are no curves to draw.")
        return lines
    verdict, epoch = collapse_verdict_in_metrics(run.metrics)
    if verdict == "co":
        lines.append(f"Catastrophic overfitting at epoch {epoch}: test PGD accuracy collapsed and stayed down while "
                     "clean accuracy held.")
    elif verdict == "failure":
        lines.append(f"Training failure from epoch {epoch}: robust and clean accuracy fell together (not CO).")
    last = run.metrics[-1]
    lines.append(f"Last epoch ({run.monitor.text()}): clean {fmt(last.get('test_clean_acc'), PCT)} %, PGD "
                 f"{fmt(last.get('test_pgd_acc'), PCT)} %.")
    fe = run.final
    if fe.last:
        lines.append(f"Final evaluation ({fe.text()}): last checkpoint {fmt(fe.last.robust_acc, PCT)} % "
                     f"robust, {fmt(fe.last.clean_acc, PCT)} % clean"
                     + (f"; best checkpoint (epoch {run.best_epoch}) {fmt(fe.best.robust_acc, PCT)} % robust"
                        if fe.best else "")
                     + (f"; averaged model (SWA, {fe.swa.snapshots} snapshots) {fmt(fe.swa.robust_acc, PCT)} % robust, "
                        f"{fmt(fe.swa.clean_acc, PCT)} % clean" if fe.swa else "") + ".")
    for r in evals:
        lines.append(f"robustlab eval {r['protocol']} ({r.get('threat_model')} eps {r.get('eps')}, "
                     f"{r.get('n_examples')} points, {Path(str(r.get('checkpoint', '?'))).stem} checkpoint): "
                     f"{fmt(r.get('robust_acc'), PCT)} % robust, {fmt(r.get('clean_acc'), PCT)} % clean; sanity "
                     f"checks {sanity_summary(r)}.")
    return lines


def _run_curves(run: RunView, path: Path) -> None:
    from robustlab.diagnostics import robust_overfitting
    plt = _plt()
    grad = any("grad_norm_sq_mean" in m for m in run.metrics)
    panels = 3 + grad
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2))
    epochs = [m["epoch"] for m in run.metrics]
    acc = axes[0]
    for key, label in CURVES + [("trainset_pgd_acc", "PGD on training points"), ("train_acc", "train (method inputs)")]:
        points = [(e, 100 * m[key]) for e, m in zip(epochs, run.metrics) if m.get(key) is not None]
        if points:      # the measured epochs only (monitor.every), joined
            acc.plot(*zip(*points), marker="o", ms=3, label=label)
    ro = robust_overfitting(run.metrics, "test_pgd_acc")
    if ro:
        acc.plot([ro["best_epoch"]], [100 * ro["best"]], marker="*", ms=11, color="k", ls="none",
                 label=f"best PGD (epoch {ro['best_epoch']})")
    _mark_onsets(acc, [run], "crimson")
    acc.set(title=f"accuracy: {run.monitor.text()}", xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 100))
    acc.title.set_fontsize(9)
    axes[1].plot(epochs, [m.get("train_loss") for m in run.metrics], marker="o", ms=3)
    axes[1].set(title="training loss (the method's objective)", xlabel="epoch", ylabel="loss")
    axes[2].plot(epochs, [m.get("lr") for m in run.metrics], marker="o", ms=3)
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    if grad:
        for key, label in (("grad_norm_sq_mean", "epoch mean"), ("grad_norm_sq_max", "epoch max")):
            axes[3].plot(epochs, [m.get(key) for m in run.metrics], marker="o", ms=3, label=f"grad norm² {label}")
        axes[3].set(title="squared global gradient norm", xlabel="epoch", ylabel="sum_p ||dL/dp||²", yscale="log")
    _legend_below(fig, [acc, axes[-1]] if grad else [acc], ncol=4)
    if grad:   # the gradient panel's own legend, small, inside (two entries)
        axes[3].legend(fontsize=7)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _write_pages(out: Path, title: str, findings: list[str], images: list[tuple[str, str]],
                 tables: list[tuple[str, list[str], list[list[str]]]], links: list[tuple[str, str]] = ()) -> None:
    md = [f"# {title}", "", "## What the runs show", ""] + [f"- {line}" for line in findings]
    for heading, file in images:
        md += ["", f"## {heading}", "", f"![{heading}]({file})"]
    for heading, header, rows in tables:
        md += ["", f"## {heading}", "", md_table(header, rows)]
    md += [f"\n[{text}]({href})" for text, href in links]
    write_text(out / "report.md", "\n".join(md) + "\n")
    lead = "<h2>What the runs show</h2><ul class='findings'>" + "".join(f"<li>{html.escape(x)}</li>" for x in findings) + "</ul>"
    sections = [(h, f"<img src='{html.escape(f)}' alt='{html.escape(h)}'>") for h, f in images]
    sections += [(h, html_table(header, rows)) for h, header, rows in tables]
    if links:
        sections.append(("Files", "<ul>" + "".join(f"<li><a href='{html.escape(href)}'>{html.escape(text)}</a></li>"
                                                   for text, href in links) + "</ul>"))
    write_text(out / "report.html", html_page(title, sections, lead))


# ---- groups of runs (studies, demos) ---------------------------------------------------------------------
def _mean_spread(values: list[float]) -> tuple[float, float, float]:
    vals = [v for v in values if v is not None]
    if not vals:
        return math.nan, math.nan, math.nan
    return statistics.fmean(vals), min(vals), max(vals)


DIAGNOSTICS = [("diag_elle_error", "ELLE linearity error", True), ("diag_gradalign_cos", "GradAlign gradient cosine", False),
               ("diag_fgsm_pgd_gap", "FGSM - PGD accuracy gap", False)]


def _plot_groups(ax, runs: dict[str, list[RunView]], key: str, scale: float = 1.0) -> None:
    """Per group: the mean over its runs of ``key`` per epoch, shaded min-max."""
    for name, group in runs.items():
        n_ep = max((len(r.metrics) for r in group), default=0)
        xs, mean, lo, hi = [], [], [], []
        for e in range(n_ep):
            m, a, b = _mean_spread([r.metrics[e].get(key) for r in group if len(r.metrics) > e])
            if not math.isnan(m):       # epochs no run measured (monitor.every) are left out, not drawn as gaps
                xs.append(e + 1), mean.append(scale * m), lo.append(scale * a), hi.append(scale * b)
        line, = ax.plot(xs, mean, marker="o", ms=3, label=f"{name} (n={len(group)})")
        ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color())


def _group_colors(ax, runs: dict[str, list[RunView]]):
    return zip([line.get_color() for line in ax.get_lines()], runs.values())


def _mark_best_epochs(ax, runs: dict[str, list[RunView]]) -> None:
    """Each run's best robust epoch as a star in its group's colour (robust overfitting: best well before last)."""
    from robustlab.diagnostics import robust_overfitting
    for color, group in list(_group_colors(ax, runs)):
        for r in group:
            ro = robust_overfitting(r.metrics, "test_pgd_acc")
            if ro:
                ax.plot([ro["best_epoch"]], [100 * ro["best"]], marker="*", ms=10, color=color, ls="none")


def _plot_grad_norms(plt, runs: dict[str, list[RunView]], path: Path) -> None:
    """Gradient instability: the epoch mean and max of the squared global gradient norm, per group (log scale)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, title) in zip(axes, [("grad_norm_sq_mean", "squared gradient norm, epoch mean"),
                                       ("grad_norm_sq_max", "squared gradient norm, epoch max")]):
        _plot_groups(ax, runs, key)
        ax.set(title=title, xlabel="epoch", ylabel="sum_p ||dL/dp||²")
        ax.set_yscale("log")
    _legend_below(fig, axes)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_diagnostics(plt, runs: dict[str, list[RunView]], path: Path) -> None:
    """The per-epoch linearity diagnostics of every group, with each run's CO onset as a dotted line in its
    group's colour: ELLE's error and the FGSM-PGD gap jump, the gradient cosine drops, when CO sets in."""
    fig, axes = plt.subplots(1, len(DIAGNOSTICS), figsize=(5 * len(DIAGNOSTICS), 4.2))
    ylabels = {"diag_elle_error": "E_ELLE (log)", "diag_gradalign_cos": "cos(grad at x, grad at x + u)",
               "diag_fgsm_pgd_gap": "FGSM - PGD accuracy"}
    for ax, (key, title, log) in zip(axes, DIAGNOSTICS):
        _plot_groups(ax, runs, key)
        for color, group in list(_group_colors(ax, runs)):
            _mark_onsets(ax, group, color)
        ax.set(title=title, xlabel="epoch", ylabel=ylabels[key])
        if log:
            ax.set_yscale("log")
    _legend_below(fig, axes)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _group_curves(plt, runs: dict[str, list[RunView]], path: Path) -> None:
    """Accuracy curves of every group (%), each panel titled with its attack, eps and points, each run's CO onset
    (dotted) or training failure (dashed) labelled with its seed."""
    first = next(r for g in runs.values() for r in g)
    curves = [(k, label) for k, label in CURVES + [("trainset_pgd_acc", "PGD on training points (training labels)")]
              if any(m.get(k) is not None for g in runs.values() for r in g for m in r.metrics)] or CURVES[:1]
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.4), sharey=True, squeeze=False)
    axes = axes[0]
    mon = first.monitor.text()
    for ax, (key, label) in zip(axes, curves):
        _plot_groups(ax, runs, key, scale=100.0)
        if key == "test_pgd_acc":
            _mark_best_epochs(ax, runs)
        if key in ("test_pgd_acc", "test_clean_acc"):
            for color, group in list(_group_colors(ax, runs)):
                _mark_onsets(ax, group, color)
        where = "training points" if key.startswith("trainset") else mon
        ax.set(title=f"{label} accuracy\n({where})" + ("\nstars: each run's best epoch" if key == "test_pgd_acc" else ""),
               xlabel="epoch", ylim=(0, 100))
        ax.title.set_fontsize(9)
    axes[0].set_ylabel("accuracy (%)")
    _legend_below(fig, axes, ncol=3)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def group_findings(runs: dict[str, list[RunView]]) -> list[str]:
    """One sentence per group with counts over its runs: CO, training failures, final robust and clean accuracy."""
    lines = []
    for name, group in runs.items():
        verdicts = [collapse_verdict_in_metrics(r.metrics) for r in group]
        co = [e for v, e in verdicts if v == "co"]
        fail = [e for v, e in verdicts if v == "failure"]
        finished = sum(r.status == "finished" for r in group)
        parts = [f"{name}: {finished} of {len(group)} runs finished",
                 f"CO in {len(co)} of {len(group)}" + (f" (onset epochs {', '.join(map(str, sorted(co)))})" if co else "")]
        if fail:
            parts.append(f"training failure (clean accuracy fell too) in {len(fail)} of {len(group)}")
        with_final = [r.final for r in group if r.final.last]
        if with_final:
            parts.append(f"{with_final[0].text()}, last checkpoint: robust "
                         f"{spread([fe.last.robust_acc for fe in with_final])} %, clean "
                         f"{spread([fe.last.clean_acc for fe in with_final])} % (mean ± sd, min–max over "
                         f"{len(with_final)} runs)")
        else:
            parts.append(f"last-epoch PGD {spread([r.metrics[-1].get('test_pgd_acc') for r in group if r.metrics])} %")
        lines.append("; ".join(parts) + ".")
    return lines


def write_comparison_report(out_dir: str | Path, groups: dict[str, list[str | Path]], title: str,
                            notes: str = "", extra_images: list[tuple[str, str]] = (),
                            trial_table: tuple[list[str], list[list]] | None = None,
                            links: list[tuple[str, str]] = (), eval_table: list[list[str]] | None = None,
                            claims: list[str] = ()) -> Path:
    """The study's claims (robustlab.report.claims: holds or not, counted per kernel path), what the groups show
    (counts over runs), their curves (mean over runs, shaded min-max), then tables: the
    last epoch's monitor and the final evaluation per group (mean ± sd (min-max)), evaluations, every run."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = {label: [load_run(p) for p in paths] for label, paths in groups.items()}
    runs = {label: [r for r in group if r.metrics] for label, group in runs.items()}
    runs = {label: group for label, group in runs.items() if group}
    plt = _plt()
    images = []
    if runs:
        _group_curves(plt, runs, out / "curves.png")
        images.append(("Accuracy curves (mean over runs, shaded min–max; dotted: CO onsets, dashed: training failures)",
                       "curves.png"))
        if any("diag_elle_error" in m for g in runs.values() for r in g for m in r.metrics):
            _plot_diagnostics(plt, runs, out / "diagnostics.png")
            images.append(("Linearity diagnostics (fixed training batch; dotted lines: CO onsets)", "diagnostics.png"))
        if any("grad_norm_sq_mean" in m for g in runs.values() for r in g for m in r.metrics):
            _plot_grad_norms(plt, runs, out / "grad_norms.png")
            images.append(("Gradient instability (squared global gradient norm per step)", "grad_norms.png"))
    images += list(extra_images)
    findings = [f"Claim {line}" for line in claims]
    findings += group_findings(runs) if runs else ["No run has recorded an epoch yet."]
    if notes:
        findings.append(notes)
    tables = []
    if runs:
        first = next(r for g in runs.values() for r in g)
        tables.append((f"Last epoch, training monitor ({first.monitor.text()}); % as mean ± sd (min–max) over runs",
                       ["group", "runs", "clean", "PGD", "FGSM", "best-epoch PGD", "best − last PGD", "CO runs"],
                       [[name, str(len(g)), spread([r.metrics[-1].get("test_clean_acc") for r in g]),
                         spread([r.metrics[-1].get("test_pgd_acc") for r in g]),
                         spread([r.metrics[-1].get("test_fgsm_acc") for r in g]),
                         spread([_best_pgd(r) for r in g]), spread([_gap(r) for r in g]),
                         f"{sum(collapse_verdict_in_metrics(r.metrics)[0] == 'co' for r in g)}/{len(g)}"] for name, g in runs.items()]))
        fes = {name: [r.final for r in g] for name, g in runs.items()}
        rows = [[name, str(sum(bool(fe.last) for fe in f)),
                 spread([fe.last.clean_acc for fe in f if fe.last]),
                 spread([fe.last.robust_acc for fe in f if fe.last]),
                 spread([fe.best.robust_acc for fe in f if fe.best])] for name, f in fes.items()]
        with_final = [fe for f in fes.values() for fe in f if fe.last]
        if with_final:
            tables.append((f"Final evaluation at the end of training ({with_final[0].text()}); %",
                           ["group", "runs", "clean (last)", "robust (last)", "robust (best checkpoint)"], rows))
    if eval_table:
        tables.append(("Evaluations (robustlab eval)", ["trial"] + EVAL_HEADER, eval_table))
    if trial_table is None:
        trial_table = (["group", "run folder", "status", "seed", "PGD (%)", "FGSM (%)"],
                       [[name, str(r.path), r.status, str(r.seed),
                         fmt(r.metrics[-1].get("test_pgd_acc"), PCT), fmt(r.metrics[-1].get("test_fgsm_acc"), PCT)]
                        for name, group in runs.items() for r in group])
    tables.append(("Runs", *trial_table))
    _write_pages(out, title, findings, images, tables, links)
    return out


def _best_pgd(r: RunView):
    vals = [m.get("test_pgd_acc") for m in r.metrics if m.get("test_pgd_acc") is not None]
    return max(vals) if vals else None


def _gap(r: RunView):
    from robustlab.diagnostics import robust_overfitting
    return robust_overfitting(r.metrics, "test_pgd_acc").get("gap")


__all__ = ["CURVES", "RunView", "SECONDS", "load_run", "write_comparison_report", "write_run_report"]
