"""``robustlab transfer STUDY.yaml``: surrogates x targets. Adversarial examples are crafted once per surrogate and
attack (stored in the study folder chunk by chunk, so an interrupted study resumes and never crafts a chunk twice),
then judged on every target.

A transfer study file::

    name: transfer_mnist5k
    surrogates:                       # run folders (checkpoint last | best), RUN@E, every trial of a study, ...
      - {run: runs/sgd, label: SGD}
      - {run: runs/sgd@4, label: SGD early-stopped (epoch 4)}
      - {study: runs/studies/sam_surrogates, checkpoint: last}   # labelled by each trial's label (seeds pool)
    targets:
      - {run: runs/vgg}
      - {model: mypkg.nets:build, weights: w.safetensors, label: external}
    attacks:                          # default: BIM, L-inf 4/255, step eps/10, 50 iterations (LGV protocol)
      - {label: BIM}
      - {label: MI-DI-TI, decay: 1.0, di: true, ti: true}
    examples: correct_on_targets      # LGV: the first N test points every target classifies correctly; or all
    points: 1000

Success rate of surrogate s on target t, two denominators, both reported and named:

- ``all``: the fraction of the selected examples whose adversarial version the target misclassifies (with
  ``examples: correct_on_targets`` this is 1 - the target's accuracy on them, the LGV protocol's rate);
- ``correct``: the same fraction among the examples that both the surrogate and the target classify correctly.

Each surrogate's sharpness (robustlab.diagnostics.sharpness: top Hessian eigenvalue and trace of its training
loss) is measured once (or read from ``<run>/sharpness/``) and drawn against its mean success over targets.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from robustlab.attacks.accuracy import predict
from robustlab.attacks.transfer import DIConfig, TIConfig, TransferAttack
from robustlab.core.digest import weights_digest
from robustlab.core.errors import ConfigError
from robustlab.core.outputs import check_out_folder
from robustlab.core.io import read_json, save_torch, load_torch, write_json, write_text
from robustlab.core.layout import is_study_dir, load_manifest, trial_dir
from robustlab.core.progress import Progress
from robustlab.core.schema import build, resolve, spec
from robustlab.core.yamlio import read_yaml
from robustlab.eval.library import test_points
from robustlab.eval.loading import LoadedModel, load_external_model, load_run_model
from robustlab.eval.transfer_claims import surrogate_rows, transfer_claims, weak_targets
from robustlab.report.claims import Claim


@dataclass
class ModelRef:
    """One model, or every trial of a study: exactly one of ``run``, ``study``, ``model``."""
    run: typing.Optional[str] = spec(None, doc="a run folder, RUN@EPOCH, a checkpoint or an exported .safetensors")
    study: typing.Optional[str] = spec(None, doc="a study folder: every finished trial")
    model: typing.Optional[str] = spec(None, doc="package.module:builder (a model robustlab did not train)")
    weights: typing.Optional[str] = spec(None, doc="with model: its weights file")
    checkpoint: str = spec("last", choices=["best", "last", "swa"], doc="which checkpoint of a run folder")
    label: typing.Optional[str] = spec(None, doc="the name in tables; models sharing a label are pooled (seeds)")
    epochs: list[int] = spec(default_factory=list, doc="with run or study: the weights kept after these epochs "
                                                       "(train.keep_epochs / keep_every) instead of checkpoint; each "
                                                       "is its own surrogate, labelled '<label>@<epoch>'")

    def check(self, key: str) -> None:
        given = [k for k in ("run", "study", "model") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"{key.rstrip('.')}: give exactly one of run, study, model (got {', '.join(given) or 'none'})")
        if self.weights is not None and self.model is None:
            raise ConfigError(f"{key}weights: goes with model: package.module:builder")


@dataclass
class TransferAttackConfig:
    """BIM / MI / DI / TI settings (robustlab.attacks.transfer)."""
    label: str = spec("BIM")
    eps: float = spec(4 / 255, lo=0.0, lo_open=True, doc="radius (LGV: 4/255)")
    alpha: typing.Optional[float] = spec(None, lo=0.0, doc="step (default eps/10)")
    steps: int = spec(50, lo=1)
    norm: str = spec("linf", choices=["linf", "l2"])
    decay: float = spec(0.0, lo=0.0, doc="MI's momentum decay mu (0: BIM)")
    di: bool = spec(False, doc="input diversity")
    di_prob: float = spec(0.5, lo=0.0, hi=1.0)
    di_rate: float = spec(0.9, lo=0.0, lo_open=True, doc="< 1 with shrink_pad, > 1 with enlarge_resize")
    di_mode: str = spec("shrink_pad", choices=["shrink_pad", "enlarge_resize"])
    di_per_sample: bool = spec(False, doc="one coin per sample instead of one per batch")
    ti: bool = spec(False, doc="translation invariance (Gaussian-smoothed gradient)")
    ti_kernel: int = spec(15, lo=1)
    ti_nsig: float = spec(3.0, lo=0.0, lo_open=True)
    seed: int = spec(0, lo=0, doc="seed of DI's draws")

    def check(self, key: str) -> None:
        if self.norm == "linf" and self.eps > 1:
            raise ConfigError(f"{key}eps: got {self.eps:g}; an L-inf radius above 1 covers the whole [0,1] image box")
        if self.di and (self.di_rate < 1) != (self.di_mode == "shrink_pad"):
            raise ConfigError(f"{key}di_rate: got {self.di_rate:g}; shrink_pad needs a rate < 1, enlarge_resize > 1")
        if self.ti_kernel % 2 == 0:
            raise ConfigError(f"{key}ti_kernel: got {self.ti_kernel}; must be odd")

    def build(self, model) -> TransferAttack:
        di = DIConfig(self.di_prob, self.di_rate, self.di_mode, self.di_per_sample) if self.di else None
        ti = TIConfig(self.ti_kernel, self.ti_nsig) if self.ti else None
        return TransferAttack(model, self.eps, self.alpha, self.steps, decay=self.decay, di=di, ti=ti, norm=self.norm,
                              generator=torch.Generator().manual_seed(self.seed))


@dataclass
class TransferStudyConfig:
    name: str = spec("transfer")
    surrogates: list[ModelRef] = spec(default_factory=list)
    targets: list[ModelRef] = spec(default_factory=list)
    attacks: list[TransferAttackConfig] = spec(default_factory=lambda: [TransferAttackConfig()])
    data: typing.Optional[str] = spec(None, doc="data set of the test points (default: the first surrogate run's data)")
    examples: str = spec("correct_on_targets", choices=["correct_on_targets", "all"],
                         doc="correct_on_targets: the first N test points every target classifies correctly (LGV)")
    points: int = spec(1000, lo=1)
    chunk: int = spec(250, lo=1, doc="points crafted and stored per resumable chunk")
    batch_size: int = spec(250, lo=1)
    sharpness_points: int = spec(500, lo=0, doc="training points for each surrogate's sharpness (0: skip)")
    min_target_accuracy: float = spec(0.8, lo=0.0, hi=1.0, doc="targets below this clean accuracy on the test split "
                                      "are flagged in the results and the report")
    claims: list[Claim] = spec(default_factory=list, doc="what the study must show (robustlab.eval.transfer_claims): "
                        "[{says, group, versus, above, at_least}] over the surrogates' labels")

    def check(self, key: str) -> None:
        for what in ("surrogates", "targets"):
            if not getattr(self, what):
                raise ConfigError(f"{key}{what}: empty; name at least one model")
        labels = [a.label for a in self.attacks]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{key}attacks: labels must differ (got {labels})")


def load_transfer_study(path: str | Path) -> TransferStudyConfig:
    path = Path(path)
    raw = read_yaml(path, "transfer study file")
    if not isinstance(raw, dict):
        raise ConfigError(f"transfer study file {path}: expected a mapping")
    cfg = build(TransferStudyConfig, raw)
    resolve(cfg)
    base = path.parent
    for ref in cfg.surrogates + cfg.targets:     # paths relative to the study file
        for attr in ("run", "study", "weights"):
            value = getattr(ref, attr)
            if value is not None and not Path(value.split("@")[0]).is_absolute():
                candidate = base / value
                if Path(candidate.as_posix().split("@")[0]).exists() or candidate.exists():
                    setattr(ref, attr, str(candidate))
    return cfg


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


def _flags(t: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in t.tolist())


def _unflags(s: str) -> torch.Tensor:
    return torch.tensor([c == "1" for c in s], dtype=torch.bool)


class TransferStudy:
    """The folder: ``transfer.json`` (the expansion), ``points.json`` (the selected test points), ``adv/<attack>/
    <surrogate>/chunk_NNNN.pt``, ``judged/`` (per-pair flags), ``results.json``, ``matrix_<attack>_<denominator>.csv``,
    ``report/``."""

    def __init__(self, cfg: TransferStudyConfig, out: Path, log: Callable[[str], None] = print):
        self.cfg, self.out, self.log = cfg, Path(out), log
        self.surrogates = expand(cfg.surrogates, "s")
        self.targets = expand(cfg.targets, "t")
        if not self.surrogates or not self.targets:
            raise ConfigError("surrogates/targets: the studies named hold no finished trial with that checkpoint")
        self._models: dict[str, LoadedModel] = {}
        self.crafted_chunks = 0       # chunks crafted by this process (tests: a resumed study crafts none twice)

    # ---- bookkeeping ----------------------------------------------------------------------------------------
    def manifest(self) -> dict:
        """What was crafted and judged: the config without what only reads the results (claims, the target flag)."""
        config = {k: v for k, v in asdict(self.cfg).items() if k not in ("claims", "min_target_accuracy")}
        body = {"config": config, "surrogates": [asdict(e) for e in self.surrogates],
                "targets": [asdict(e) for e in self.targets]}
        body["fingerprint"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        return body

    def prepare(self) -> None:
        """Record the expansion and a digest of every model's weights; a folder holding another study, or crafted
        and judged with weights that have since changed (a run retrained in place), is refused naming the models."""
        check_out_folder(self.out, "--out", "transfer study", "transfer.json")
        path = self.out / "transfer.json"
        manifest = self.manifest()
        old = read_json(path) if path.is_file() else None
        if old is not None and old.get("fingerprint") != manifest["fingerprint"]:
            raise ConfigError(f"{self.out}: holds a different transfer study; choose another --out")
        manifest["weights"] = {e.key: weights_digest(self.model(e)) for e in self.surrogates + self.targets}
        stored = (old or {}).get("weights") or {}
        changed = [f"{e.key} ({e.label})" for e in self.surrogates + self.targets
                   if stored.get(e.key) not in (None, manifest["weights"][e.key])]
        if changed:
            raise ConfigError(f"{self.out}: the weights of {', '.join(changed)} changed since this study crafted and "
                              "judged with them; choose another --out (or delete the folder to start over)")
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(path, manifest)

    def model(self, entry: Entry) -> torch.nn.Module:
        if entry.key not in self._models:
            self._models[entry.key] = entry.load()
        return self._models[entry.key].model

    # ---- the examples ----------------------------------------------------------------------------------------
    def _data(self):
        """The data set of the test points: the study's ``data``, else the first surrogate run's."""
        if self.cfg.data is not None:
            return self.cfg.data
        first = next((e for e in self.surrogates if "run" in e.source), None)
        if first is None:
            raise ConfigError("data: required when no surrogate is a robustlab run")
        return self._loaded(first).config.data

    def points(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The selected test points (indices recorded in points.json, so a resume uses the same ones)."""
        x, y, name = test_points(self._data(), 10 ** 9)
        path = self.out / "points.json"
        if path.is_file():
            idx = read_json(path)["indices"]
        else:
            if self.cfg.examples == "all":
                idx = list(range(min(self.cfg.points, len(y))))
            else:
                ok = torch.ones(len(y), dtype=torch.bool)
                for t in self.targets:
                    ok &= predict(self.model(t), x, self.cfg.batch_size).cpu() == y
                idx = ok.nonzero().squeeze(1)[:self.cfg.points].tolist()
                if len(idx) < self.cfg.points:
                    self.log(f"warning: only {len(idx)} test points are correct on every target (asked for "
                             f"{self.cfg.points})")
            write_json(path, {"dataset": name, "examples": self.cfg.examples, "indices": idx})
        sel = torch.tensor(idx, dtype=torch.long)
        return x[sel], y[sel], idx

    def _loaded(self, entry: Entry) -> LoadedModel:
        self.model(entry)
        return self._models[entry.key]

    # ---- crafting and judging ----------------------------------------------------------------------------------
    def adv_chunk(self, attack: TransferAttackConfig, s: Entry, c: int) -> Path:
        return self.out / "adv" / attack.label / s.key / f"chunk_{c:04d}.pt"

    def craft(self, x: torch.Tensor, y: torch.Tensor) -> None:
        chunks = range(0, len(y), self.cfg.chunk)
        for attack in self.cfg.attacks:
            for s in self.surrogates:
                todo = [c for c in range(len(chunks)) if not self.adv_chunk(attack, s, c).is_file()]
                if not todo:
                    continue
                atk = attack.build(self.model(s))
                progress = Progress(f"craft {attack.label} on {s.key} ({s.label})", len(todo), self.log, unit="chunks")
                for c in todo:
                    lo = c * self.cfg.chunk
                    atk.generator = torch.Generator().manual_seed(attack.seed + c)   # a chunk's draws do not depend on resumes
                    xs, ys = x[lo:lo + self.cfg.chunk], y[lo:lo + self.cfg.chunk]
                    adv = torch.cat([atk(xs[i:i + self.cfg.batch_size], ys[i:i + self.cfg.batch_size])
                                     for i in range(0, len(ys), self.cfg.batch_size)])
                    save_torch(self.adv_chunk(attack, s, c), {"x_adv": adv.cpu(), "start": lo})
                    self.crafted_chunks += 1
                    progress.advance(1)

    def adversarial(self, attack: TransferAttackConfig, s: Entry, n: int) -> torch.Tensor:
        return torch.cat([load_torch(self.adv_chunk(attack, s, c))["x_adv"]
                          for c in range(-(-n // self.cfg.chunk))])[:n]

    def target_accuracy(self) -> dict[str, float]:
        """Each target's clean accuracy on the whole test split (kept in judged/targets.json)."""
        path = self.out / "judged" / "targets.json"
        stored = read_json(path) if path.is_file() else {}
        if all(t.key in stored for t in self.targets):
            return {t.key: stored[t.key] for t in self.targets}
        x, y, _ = test_points(self._data(), 10 ** 9)
        out = {t.key: int((predict(self.model(t), x, self.cfg.batch_size).cpu() == y).sum()) / len(y)
               for t in self.targets}
        write_json(path, out)
        return out

    def clean_correct(self, entry: Entry, x, y) -> torch.Tensor:
        path = self.out / "judged" / "clean" / f"{entry.key}.json"
        if path.is_file():
            return _unflags(read_json(path)["correct"])
        ok = predict(self.model(entry), x, self.cfg.batch_size).cpu() == y
        write_json(path, {"correct": _flags(ok)})
        return ok

    def judge(self, x, y) -> dict:
        results = {}
        clean = {e.key: self.clean_correct(e, x, y) for e in self.surrogates + self.targets}
        for attack in self.cfg.attacks:
            rows_all, rows_correct = [], []
            progress = Progress(f"judge {attack.label} on {len(self.targets)} targets", len(self.surrogates), self.log,
                                unit="surrogates")
            for s in self.surrogates:
                adv = None
                row_all, row_correct = [], []
                for t in self.targets:
                    path = self.out / "judged" / attack.label / f"{s.key}__{t.key}.json"
                    if path.is_file():
                        fooled = _unflags(read_json(path)["fooled"])
                    else:
                        adv = self.adversarial(attack, s, len(y)) if adv is None else adv
                        fooled = predict(self.model(t), adv, self.cfg.batch_size).cpu() != y
                        write_json(path, {"fooled": _flags(fooled)})
                    both = clean[s.key] & clean[t.key]
                    row_all.append(int(fooled.sum()) / len(y) if len(y) else math.nan)
                    row_correct.append(int((fooled & both).sum()) / int(both.sum()) if int(both.sum()) else math.nan)
                rows_all.append(row_all)
                rows_correct.append(row_correct)
                progress.advance(1)
            results[attack.label] = {"attack": asdict(attack), "success_all": rows_all, "success_correct": rows_correct}
        return results

    def sharpness(self) -> dict[str, dict]:
        from robustlab.eval.sharpness import checkpoint_sharpness
        out = {}
        if self.cfg.sharpness_points == 0:
            return out
        progress = Progress(f"sharpness ({self.cfg.sharpness_points} training points)", len(self.surrogates), self.log,
                            unit="surrogates")
        for s in self.surrogates:
            progress.advance(1)
            if "run" not in s.source:
                continue
            run = s.source["run"]
            try:
                res = checkpoint_sharpness(run, s.source.get("checkpoint", "last"), self.cfg.sharpness_points,
                                           out=None, reuse=True)
            except ConfigError as exc:
                self.log(f"sharpness of {s.key} skipped: {exc}")
                continue
            out[s.key] = {k: res[k] for k in ("hessian_top_eig", "hessian_trace", "hessian_trace_se")}
        return out

    # ---- the whole study ------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.prepare()
        x, y, idx = self.points()
        self.log(f"robustlab transfer {self.cfg.name}: {len(self.surrogates)} surrogates x {len(self.targets)} targets, "
                 f"{len(self.cfg.attacks)} attack(s), {len(y)} examples ({self.cfg.examples}); folder {self.out}")
        self.craft(x, y)
        matrices = self.judge(x, y)
        sharp = self.sharpness()
        accuracy = self.target_accuracy()
        results = {"name": self.cfg.name, "examples": self.cfg.examples, "n_examples": len(y),
                   "denominators": {"success_all": "all selected examples",
                                    "success_correct": "examples correct on both the surrogate and the target"},
                   "surrogates": [asdict(e) for e in self.surrogates], "targets": [asdict(e) for e in self.targets],
                   "attacks": matrices, "sharpness": sharp, "target_accuracy": accuracy,
                   "min_target_accuracy": self.cfg.min_target_accuracy}
        results["weak_targets"] = weak_targets(results["targets"], accuracy, self.cfg.min_target_accuracy)
        results["surrogate_rows"] = surrogate_rows(results["surrogates"], matrices, sharp)
        results["claims"] = transfer_claims(self.cfg.claims, results["surrogate_rows"])
        for line in results["weak_targets"]:
            self.log(f"FLAG {line}")
        for c in results["claims"]:
            self.log(f"claim {'HOLDS' if c['holds'] else 'does not hold'}: {c['says']}: {c['met']} of {c['runs']} "
                     f"surrogates ({', '.join(f'{p} {k}/{n}' for p, (k, n) in c['paths'].items())})")
        write_json(self.out / "results.json", results)
        for label, m in matrices.items():
            for den in ("success_all", "success_correct"):
                write_text(self.out / f"matrix_{label}_{den.split('_')[1]}.csv", matrix_csv(self, m[den]))
        from robustlab.report.transfer import write_transfer_report
        results["report"] = str(write_transfer_report(self.out, results))
        return results


def matrix_csv(study: TransferStudy, rows: list[list[float]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["surrogate", "label"] + [f"{t.key} {t.label}" for t in study.targets])
    for s, row in zip(study.surrogates, rows):
        w.writerow([s.key, s.label] + ["" if math.isnan(v) else f"{v:.6g}" for v in row])
    return buf.getvalue()


def run_transfer(study_file: str | Path, out: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    cfg = load_transfer_study(study_file)
    out = Path(out) if out else Path("runs") / "transfer" / cfg.name
    return TransferStudy(cfg, out, log).run()
