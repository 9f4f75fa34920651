"""Per-run and per-group reports drawn from run folders (metrics.jsonl, results.json, config.yaml)."""
from __future__ import annotations

import html
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from robustlab.core.errors import ConfigError
from robustlab.core.io import read_json, read_jsonl, write_text

CURVES = [("test_clean_acc", "clean"), ("test_pgd_acc", "PGD"), ("test_fgsm_acc", "FGSM")]


@dataclass
class RunRecord:
    path: Path
    config: dict
    metrics: list[dict]
    results: dict


def load_run(run_dir: str | Path) -> RunRecord:
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    config = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    res_path = run_dir / "results.json"
    try:
        metrics = read_jsonl(run_dir / "metrics.jsonl")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return RunRecord(run_dir, config, metrics, read_json(res_path) if res_path.is_file() else {})


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_page(title: str, sections: list[tuple[str, str]]) -> str:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}")
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"


def _final_row(run: RunRecord) -> dict:
    from robustlab.diagnostics import robust_overfitting
    last = run.results.get("last") or (run.metrics[-1] if run.metrics else {})
    fe = run.results.get("final_eval", {})
    return {"status": run.results.get("status", "unknown"), "epochs": run.results.get("epochs_completed", len(run.metrics)),
            "clean": last.get("test_clean_acc"), "pgd": last.get("test_pgd_acc"), "fgsm": last.get("test_fgsm_acc"),
            "best_pgd": max((m.get("test_pgd_acc") or 0.0 for m in run.metrics), default=None),
            "pgd_gap": robust_overfitting(run.metrics, "test_pgd_acc").get("gap"),
            "final_clean": fe.get("last", {}).get("clean_acc"), "final_robust": fe.get("last", {}).get("robust_acc"),
            "final_best_robust": fe.get("best", {}).get("robust_acc"),
            "protocol": fe.get("protocol"), "seconds": run.results.get("train_seconds")}


def write_run_report(run_dir: str | Path) -> Path:
    """report/curves.png, report/report.md and report/report.html for one run folder."""
    run = load_run(run_dir)
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    plt = _plt()
    from robustlab.diagnostics import robust_overfitting
    grad = any("grad_norm_sq_mean" in m for m in run.metrics)
    fig, axes = plt.subplots(1, 3 + grad, figsize=(5 * (3 + grad), 4))
    epochs = [m["epoch"] for m in run.metrics]
    for key, label in CURVES + [("trainset_pgd_acc", "PGD on training points"), ("train_acc", "train (method inputs)")]:
        vals = [m.get(key) for m in run.metrics]
        if any(v is not None for v in vals):
            axes[0].plot(epochs, [math.nan if v is None else v for v in vals], marker="o", ms=3, label=label)
    ro = robust_overfitting(run.metrics, "test_pgd_acc")
    if ro:
        axes[0].axvline(ro["best_epoch"], color="grey", ls=":", lw=1)
        axes[0].annotate(f"best PGD {ro['best']:.3f} (epoch {ro['best_epoch']}); last - best {-ro['gap']:+.3f}",
                         (ro["best_epoch"], ro["best"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    axes[0].set(title="accuracy (test subset unless stated)", xlabel="epoch", ylim=(0, 1))
    axes[0].legend(fontsize=8)
    if grad:
        for key, label in (("grad_norm_sq_mean", "epoch mean"), ("grad_norm_sq_max", "epoch max")):
            axes[3].plot(epochs, [m.get(key) for m in run.metrics], marker="o", ms=3, label=label)
        axes[3].set(title="squared global gradient norm", xlabel="epoch", yscale="log")
        axes[3].legend(fontsize=8)
    axes[1].plot(epochs, [m.get("train_loss") for m in run.metrics], marker="o", ms=3)
    axes[1].set(title="train loss", xlabel="epoch")
    axes[2].plot(epochs, [m.get("lr") for m in run.metrics], marker="o", ms=3)
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)
    f = _final_row(run)
    method = run.config.get("method", {})
    title = f"robustlab run: {method.get('name', '?')} eps={method.get('eps', '?'):.4g} on {run.config.get('data', {}).get('name', '?')}"
    header = ["status", "epochs", "test clean", "test PGD (monitor)", "test FGSM", "best PGD", f"final {f['protocol'] or 'eval'} clean", "robust", "train s"]
    rows = [[f["status"], f["epochs"], f["clean"], f["pgd"], f["fgsm"], f["best_pgd"], f["final_clean"], f["final_robust"], f["seconds"]]]
    mkeys = [k for k in (run.metrics[0] if run.metrics else {}) if k != "epoch"]
    mrows = [[m.get("epoch")] + [m.get(k) for k in mkeys] for m in run.metrics]
    write_text(out / "report.md", f"# {title}\n\n![curves](curves.png)\n\n## Summary\n\n{_md_table(header, rows)}\n\n"
                                  f"## Per-epoch metrics\n\n{_md_table(['epoch'] + mkeys, mrows)}\n")
    write_text(out / "report.html", _html_page(title, [("Curves", "<img src='curves.png' width='100%'>"),
                                                       ("Summary", _html_table(header, rows)),
                                                       ("Per-epoch metrics", _html_table(['epoch'] + mkeys, mrows))]))
    return out


def _mean_spread(values: list[float]) -> tuple[float, float, float]:
    vals = [v for v in values if v is not None]
    if not vals:
        return math.nan, math.nan, math.nan
    return statistics.fmean(vals), min(vals), max(vals)


DIAGNOSTICS = [("diag_elle_error", "ELLE linearity error", True), ("diag_gradalign_cos", "GradAlign gradient cosine", False),
               ("diag_fgsm_pgd_gap", "FGSM - PGD accuracy gap", False)]


def _plot_groups(ax, runs: dict[str, list[RunRecord]], key: str) -> None:
    """Per group: the mean over its runs of ``key`` per epoch, shaded min-max."""
    for name, group in runs.items():
        n_ep = max((len(r.metrics) for r in group), default=0)
        xs, mean, lo, hi = [], [], [], []
        for e in range(n_ep):
            m, a, b = _mean_spread([r.metrics[e].get(key) for r in group if len(r.metrics) > e])
            xs.append(e + 1), mean.append(m), lo.append(a), hi.append(b)
        line, = ax.plot(xs, mean, marker="o", ms=3, label=name)
        ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color())


def _mark_best_epochs(ax, runs: dict[str, list[RunRecord]]) -> None:
    """Each run's best robust epoch as a marker on its group's curve colour (robust overfitting: the best epoch
    is well before the last)."""
    from robustlab.diagnostics import robust_overfitting
    for line, group in zip(ax.get_lines(), runs.values()):
        for r in group:
            ro = robust_overfitting(r.metrics, "test_pgd_acc")
            if ro:
                ax.plot([ro["best_epoch"]], [ro["best"]], marker="*", ms=10, color=line.get_color(), ls="none")


def _plot_grad_norms(plt, runs: dict[str, list[RunRecord]], path: Path) -> None:
    """Gradient instability: the epoch mean and max of the squared global gradient norm, per group (log scale)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, title) in zip(axes, [("grad_norm_sq_mean", "squared gradient norm, epoch mean"),
                                       ("grad_norm_sq_max", "squared gradient norm, epoch max")]):
        _plot_groups(ax, runs, key)
        ax.set(title=title, xlabel="epoch", ylabel="sum_p ||dL/dp||^2")
        ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_diagnostics(plt, runs: dict[str, list[RunRecord]], path: Path) -> None:
    """The per-epoch linearity diagnostics of every group, with each run's CO onset as a dotted line in its
    group's colour: ELLE's error and the FGSM-PGD gap jump, the gradient cosine drops, when CO sets in."""
    from robustlab.diagnostics import co_onset_in_metrics
    fig, axes = plt.subplots(1, len(DIAGNOSTICS), figsize=(5 * len(DIAGNOSTICS), 4))
    for ax, (key, title, log) in zip(axes, DIAGNOSTICS):
        _plot_groups(ax, runs, key)
        for line, group in zip(ax.get_lines(), runs.values()):
            for r in group:
                onset = co_onset_in_metrics(r.metrics)
                if onset is not None:
                    ax.axvline(onset, color=line.get_color(), ls=":", lw=1)
        ax.set(title=title, xlabel="epoch")
        if log:
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_comparison_report(out_dir: str | Path, groups: dict[str, list[str | Path]], title: str,
                            notes: str = "", extra_images: list[tuple[str, str]] = (),
                            trial_table: tuple[list[str], list[list]] | None = None) -> Path:
    """Curves of every group (mean over its runs, shaded min-max) and a final table, into ``out_dir``;
    ``extra_images`` are (heading, file in out_dir) pairs; ``trial_table`` replaces the per-run list.
    The 'CO runs' column counts runs with catastrophic overfitting (robustlab.diagnostics.co_onset)."""
    from robustlab.diagnostics import co_onset_in_metrics
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = {label: [load_run(p) for p in paths] for label, paths in groups.items()}
    plt = _plt()
    curves = [(k, label) for k, label in CURVES + [("trainset_pgd_acc", "PGD on training points (training labels)")]
              if any(m.get(k) is not None for g in runs.values() for r in g for m in r.metrics)] or CURVES[:1]
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), sharey=True)
    for ax, (key, label) in zip(axes, curves):
        _plot_groups(ax, runs, key)
        if key == "test_pgd_acc":
            _mark_best_epochs(ax, runs)
        where = "" if key.startswith("trainset") else "test "
        ax.set(title=f"{where}{label} accuracy" + (" (stars: each run's best epoch)" if key == "test_pgd_acc" else ""),
               xlabel="epoch", ylim=(0, 1))
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)
    if any("diag_elle_error" in m for g in runs.values() for r in g for m in r.metrics):
        _plot_diagnostics(plt, runs, out / "diagnostics.png")
        extra_images = [("Linearity diagnostics (fixed training batch; dotted lines: CO onsets)", "diagnostics.png")] + list(extra_images)
    if any("grad_norm_sq_mean" in m for g in runs.values() for r in g for m in r.metrics):
        _plot_grad_norms(plt, runs, out / "grad_norms.png")
        extra_images = [("Gradient instability (squared global gradient norm per step)", "grad_norms.png")] + list(extra_images)
    protocols = {_final_row(r)["protocol"] for g in runs.values() for r in g} - {None}
    final_name = protocols.pop() if len(protocols) == 1 else "final eval"
    header = ["method", "runs", "clean (mean)", "PGD (mean)", "PGD min", "PGD max", "FGSM (mean)", "best-epoch PGD (mean)",
              "best - last PGD (mean)", f"{final_name} last (mean)", f"{final_name} best ckpt (mean)"]
    header.append("CO runs")
    rows = []
    for name, group in runs.items():
        finals = [_final_row(r) for r in group]
        pgd = _mean_spread([f["pgd"] for f in finals])
        row = [name, len(group), _mean_spread([f["clean"] for f in finals])[0], pgd[0], pgd[1], pgd[2],
               _mean_spread([f["fgsm"] for f in finals])[0], _mean_spread([f["best_pgd"] for f in finals])[0],
               _mean_spread([f["pgd_gap"] for f in finals])[0],
               _mean_spread([f["final_robust"] for f in finals])[0], _mean_spread([f["final_best_robust"] for f in finals])[0]]
        row.append(f"{sum(co_onset_in_metrics(r.metrics) is not None for r in group)}/{len(group)}")
        rows.append(row)
    if trial_table is None:
        trial_table = (["group", "run folder", "status", "PGD", "FGSM"],
                       [[name, str(r.path.relative_to(out.parent) if r.path.is_relative_to(out.parent) else r.path),
                         _final_row(r)["status"], _final_row(r)["pgd"], _final_row(r)["fgsm"]]
                        for name, group in runs.items() for r in group])
    images_md = "".join(f"\n\n## {h}\n\n![{h}]({f})" for h, f in extra_images)
    md = (f"# {title}\n\n{notes}\n\n![curves](curves.png){images_md}\n\n## Final epoch (test subset)\n\n"
          f"{_md_table(header, rows)}\n\n## Runs\n\n{_md_table(*trial_table)}\n")
    write_text(out / "report.md", md)
    sections = [("About", f"<p>{html.escape(notes)}</p>"), ("Curves", "<img src='curves.png' width='100%'>")]
    sections += [(h, f"<img src='{html.escape(f)}' width='100%'>") for h, f in extra_images]
    sections += [("Final epoch (test subset)", _html_table(header, rows)), ("Runs", _html_table(*trial_table))]
    write_text(out / "report.html", _html_page(title, sections))
    return out
