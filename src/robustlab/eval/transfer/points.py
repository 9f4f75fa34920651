"""The examples a transfer study attacks, and its targets' clean accuracy.

``examples: correct_on_targets`` (the LGV protocol) takes the first ``points`` test points every target classifies
correctly, ``all`` the first ``points`` test points; the indices are kept in ``points.json`` so that a resumed
study attacks the same ones. Each target's clean accuracy on the whole test split is kept in
``judged/targets.json`` (a target below ``min_target_accuracy`` is flagged)."""
from __future__ import annotations

import torch

from robustlab.attacks.accuracy import predict
from robustlab.core.io import read_json, write_json
from robustlab.eval.library import test_points


def select_points(study) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The selected test points and their indices in the test split."""
    cfg = study.cfg
    x, y, name = test_points(study.data(), 10 ** 9)
    path = study.out / "points.json"
    if path.is_file():
        idx = read_json(path)["indices"]
    else:
        if cfg.examples == "all":
            idx = list(range(min(cfg.points, len(y))))
        else:
            ok = torch.ones(len(y), dtype=torch.bool)
            for t in study.targets:
                ok &= predict(study.model(t), x, cfg.batch_size).cpu() == y
            idx = ok.nonzero().squeeze(1)[:cfg.points].tolist()
            if len(idx) < cfg.points:
                study.log(f"warning: only {len(idx)} test points are correct on every target (asked for {cfg.points})")
        write_json(path, {"dataset": name, "examples": cfg.examples, "indices": idx})
    sel = torch.tensor(idx, dtype=torch.long)
    return x[sel], y[sel], idx


def target_accuracy(study) -> dict[str, float]:
    """Each target's clean accuracy on the whole test split."""
    path = study.out / "judged" / "targets.json"
    stored = read_json(path) if path.is_file() else {}
    if all(t.key in stored for t in study.targets):
        return {t.key: stored[t.key] for t in study.targets}
    x, y, _ = test_points(study.data(), 10 ** 9)
    out = {t.key: int((predict(study.model(t), x, study.cfg.batch_size).cpu() == y).sum()) / len(y)
           for t in study.targets}
    write_json(path, out)
    return out
