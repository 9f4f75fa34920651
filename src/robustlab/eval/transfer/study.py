"""A transfer study's folder and its run: ``transfer.json`` (the expansion, a fingerprint of what is crafted and
judged, and every model's weights digest), ``points.json``, ``adv/`` (:mod:`.craft`), ``judged/`` (:mod:`.judge`),
``results.json``, ``matrix_<attack>_<denominator>.csv`` and ``report/``. The format of a study file is in
:mod:`robustlab.eval.transfer`."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from robustlab.core.digest import weights_digest
from robustlab.core.errors import ConfigError
from robustlab.core.io import read_json, write_json, write_text
from robustlab.core.outputs import check_out_folder
from robustlab.core.progress import Progress
from robustlab.eval.loading import LoadedModel
from robustlab.eval.transfer.config import TransferStudyConfig, load_transfer_study
from robustlab.eval.transfer.craft import craft
from robustlab.eval.transfer.entries import Entry, expand
from robustlab.eval.transfer.judge import judge, matrix_csv
from robustlab.eval.transfer.points import select_points, target_accuracy
from robustlab.eval.transfer_claims import pooled_rank, rank_rows, surrogate_rows, transfer_claims, weak_targets


class TransferStudy:
    def __init__(self, cfg: TransferStudyConfig, out: Path, log: Callable[[str], None] = print):
        self.cfg, self.out, self.log = cfg, Path(out), log
        self.surrogates = expand(cfg.surrogates, "s")
        self.targets = expand(cfg.targets, "t")
        if not self.surrogates or not self.targets:
            raise ConfigError("surrogates/targets: the studies named hold no finished trial with that checkpoint")
        self._models: dict[str, LoadedModel] = {}
        self.crafted_chunks = 0       # chunks crafted by this process (tests: a resumed study crafts none twice)

    def manifest(self) -> dict:
        """What was crafted and judged: the config without what only reads the results (claims, the target flag)."""
        config = {k: v for k, v in asdict(self.cfg).items() if k not in ("claims", "min_target_accuracy")}
        # folders crafted before attacks had names (all bim) keep their fingerprint
        config["attacks"] = [{k: v for k, v in a.items() if (k, v) != ("name", "bim")} for a in config["attacks"]]
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

    def loaded(self, entry: Entry) -> LoadedModel:
        if entry.key not in self._models:
            self._models[entry.key] = entry.load()
        return self._models[entry.key]

    def model(self, entry: Entry) -> torch.nn.Module:
        return self.loaded(entry).model

    def data(self):
        """The data set of the test points: the study's ``data``, else the first surrogate run's."""
        if self.cfg.data is not None:
            return self.cfg.data
        first = next((e for e in self.surrogates if "run" in e.source), None)
        if first is None:
            raise ConfigError("data: required when no surrogate is a robustlab run")
        return self.loaded(first).config.data

    def points(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        return select_points(self)

    def sharpness(self) -> dict[str, dict]:
        """Each surrogate run's sharpness (top Hessian eigenvalue and trace of its training loss), measured once or
        read from ``<run>/sharpness/``; outside models are skipped."""
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
            try:
                res = checkpoint_sharpness(s.source["run"], s.source.get("checkpoint", "last"), self.cfg.sharpness_points,
                                           out=None, reuse=True)
            except ConfigError as exc:
                self.log(f"sharpness of {s.key} skipped: {exc}")
                continue
            out[s.key] = {k: res[k] for k in ("hessian_top_eig", "hessian_trace", "hessian_trace_se")}
        return out

    def run(self) -> dict:
        self.prepare()
        x, y, _ = self.points()
        self.log(f"robustlab transfer {self.cfg.name}: {len(self.surrogates)} surrogates x {len(self.targets)} targets, "
                 f"{len(self.cfg.attacks)} attack(s), {len(y)} examples ({self.cfg.examples}); folder {self.out}")
        self.crafted_chunks += craft(self, x, y)
        matrices = judge(self, x, y)
        results = self.results(len(y), matrices, self.sharpness(), target_accuracy(self))
        write_json(self.out / "results.json", results)
        for label, m in matrices.items():
            for den in ("success_all", "success_correct"):
                write_text(self.out / f"matrix_{label}_{den.split('_')[1]}.csv",
                           matrix_csv(self.surrogates, self.targets, m[den]))
        from robustlab.report.transfer import write_transfer_report
        results["report"] = str(write_transfer_report(self.out, results))
        return results

    def results(self, n: int, matrices: dict, sharp: dict, accuracy: dict) -> dict:
        """results.json: the matrices, sharpness, target accuracies, flags, per-surrogate rows, the rank correlation
        of sharpness and success (per seed and kernel path, and pooled) and claims."""
        results = {"name": self.cfg.name, "examples": self.cfg.examples, "n_examples": n,
                   "denominators": {"success_all": "all selected examples",
                                    "success_correct": "examples correct on both the surrogate and the target"},
                   "surrogates": [asdict(e) for e in self.surrogates], "targets": [asdict(e) for e in self.targets],
                   "attacks": matrices, "sharpness": sharp, "target_accuracy": accuracy,
                   "min_target_accuracy": self.cfg.min_target_accuracy}
        results["weak_targets"] = weak_targets(results["targets"], accuracy, self.cfg.min_target_accuracy)
        results["surrogate_rows"] = surrogate_rows(results["surrogates"], matrices, sharp)
        results["rank_rows"] = rank_rows(results["surrogate_rows"], matrices) if sharp else []
        results["sharpness_transfer"] = pooled_rank(results["surrogate_rows"], matrices) if sharp else {}
        results["claims"] = transfer_claims(self.cfg.claims, results["surrogate_rows"] + results["rank_rows"])
        for line in results["weak_targets"]:
            self.log(f"FLAG {line}")
        for c in results["claims"]:
            self.log(f"claim {'HOLDS' if c['holds'] else 'does not hold'}: {c['says']}: {c['met']} of {c['runs']} "
                     f"surrogates ({', '.join(f'{p} {k}/{n}' for p, (k, n) in c['paths'].items())})")
        return results


def run_transfer(study_file: str | Path, out: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    cfg = load_transfer_study(study_file)
    out = Path(out) if out else Path("runs") / "transfer" / cfg.name
    return TransferStudy(cfg, out, log).run()
