"""The models of a transfer study, expanded: every model reference (a run, RUN@EPOCH, each finished trial of a
study, an outside builder with its weights) becomes an :class:`Entry` with a stable key (``s000``, ``t001``) and
the label that pools it with others (seeds)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.layout import is_study_dir, load_manifest, trial_dir
from robustlab.eval.loading import LoadedModel, load_external_model, load_run_model
from robustlab.eval.transfer.config import ModelRef


@dataclass
class Entry:
    """One expanded model: a stable key, its label (pooling seeds), where it comes from."""
    key: str
    label: str
    source: dict = field(default_factory=dict)

    def load(self) -> LoadedModel:
        s = self.source
        if "model" in s:
            return load_external_model(s["model"], s.get("weights"), "cpu")
        return load_run_model(s["run"], s.get("checkpoint", "last"), "cpu")


def _run_entries(run: str, label: str, ref: ModelRef) -> list[Entry]:
    if not ref.epochs:
        return [Entry("", label, {"run": run, "checkpoint": ref.checkpoint})]
    return [Entry("", f"{label}@{e}", {"run": f"{run}@{e}", "checkpoint": ref.checkpoint}) for e in ref.epochs]


def expand(refs: list[ModelRef], prefix: str) -> list[Entry]:
    out = []
    for ref in refs:
        if ref.study is not None:
            if not is_study_dir(ref.study):
                raise ConfigError(f"study: {ref.study}: not a study folder (no study.json)")
            manifest = load_manifest(Path(ref.study))
            for t in manifest["trials"]:
                run = trial_dir(Path(ref.study), t["name"])
                if not (run / "checkpoints" / f"{ref.checkpoint}.pt").is_file():
                    continue
                label = str(ref.label or t["overrides"].get("label") or t["name"])
                out += _run_entries(str(run), label, ref)
        elif ref.model is not None:
            out.append(Entry("", ref.label or ref.model, {"model": ref.model, "weights": ref.weights}))
        else:
            name = Path(ref.run.split("@")[0]).name + (f"@{ref.run.rsplit('@', 1)[1]}" if "@" in ref.run else "")
            out += _run_entries(ref.run, ref.label or name, ref)
    for i, e in enumerate(out):
        e.key = f"{prefix}{i:03d}"
    return out
