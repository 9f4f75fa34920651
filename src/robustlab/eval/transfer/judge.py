"""Judging: which adversarial examples fool which target, and the success-rate matrices.

Per (attack, surrogate, target) the fooled flags are kept in ``judged/<attack>/<s>__<t>.json``, each model's clean
correctness in ``judged/clean/<key>.json`` (flags as text, :mod:`robustlab.core.flags`), so a resumed study judges no
pair twice. Success of surrogate s on target t, two denominators (the module docstring of
:mod:`robustlab.eval.transfer`): ``success_all`` over all selected examples, ``success_correct`` over the examples
both s and t classify correctly."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict

import torch

from robustlab.attacks.accuracy import predict
from robustlab.core.flags import flags_tensor, flags_text
from robustlab.core.io import read_json, write_json
from robustlab.core.progress import Progress
from robustlab.eval.transfer.craft import adversarial


def clean_correct(study, entry, x, y) -> torch.Tensor:
    path = study.out / "judged" / "clean" / f"{entry.key}.json"
    if path.is_file():
        return flags_tensor(read_json(path)["correct"])
    ok = predict(study.model(entry), x, study.cfg.batch_size).cpu() == y
    write_json(path, {"correct": flags_text(ok)})
    return ok


def fooled_flags(study, attack, s, t, y, adv: dict) -> torch.Tensor:
    """Whether target t misclassifies each adversarial example crafted on s (``adv`` caches s's examples)."""
    path = study.out / "judged" / attack.label / f"{s.key}__{t.key}.json"
    if path.is_file():
        return flags_tensor(read_json(path)["fooled"])
    if "x" not in adv:
        adv["x"] = adversarial(study, attack.label, s.key, len(y))
    fooled = predict(study.model(t), adv["x"], study.cfg.batch_size).cpu() != y
    write_json(path, {"fooled": flags_text(fooled)})
    return fooled


def judge(study, x, y) -> dict:
    """``{attack label: {"attack", "success_all", "success_correct"}}``, rows surrogates, columns targets."""
    results = {}
    clean = {e.key: clean_correct(study, e, x, y) for e in study.surrogates + study.targets}
    for attack in study.cfg.attacks:
        rows_all, rows_correct = [], []
        progress = Progress(f"judge {attack.label} on {len(study.targets)} targets", len(study.surrogates), study.log,
                            unit="surrogates")
        for s in study.surrogates:
            adv, row_all, row_correct = {}, [], []
            for t in study.targets:
                fooled = fooled_flags(study, attack, s, t, y, adv)
                both = clean[s.key] & clean[t.key]
                row_all.append(int(fooled.sum()) / len(y) if len(y) else math.nan)
                row_correct.append(int((fooled & both).sum()) / int(both.sum()) if int(both.sum()) else math.nan)
            rows_all.append(row_all)
            rows_correct.append(row_correct)
            progress.advance(1)
        results[attack.label] = {"attack": asdict(attack), "success_all": rows_all, "success_correct": rows_correct}
    return results


def matrix_csv(surrogates, targets, rows: list[list[float]]) -> str:
    """One success matrix as CSV: a row per surrogate, a column per target."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["surrogate", "label"] + [f"{t.key} {t.label}" for t in targets])
    for s, row in zip(surrogates, rows):
        w.writerow([s.key, s.label] + ["" if math.isnan(v) else f"{v:.6g}" for v in row])
    return buf.getvalue()
