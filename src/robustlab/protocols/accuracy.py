"""Clean accuracy and, for each of several protocols, robust accuracy on the same points: what the per-epoch monitor,
SWA's evaluation, the final evaluation and the sanity checks measure, through the one cascade engine.

Robust accuracy counts a point as robust only if it is classified correctly clean and no stage of the protocol fooled
it (per sample, over restarts). Points misclassified clean are not attacked; a point whose logits are not all finite
is never correct. The verdict at the adversarial point is the one the attack's own eval-mode forward pass
established (no second pass). Each protocol is run on all clean-correct points (protocols are measured side by side,
not chained), in chunks of ``batch_size`` points.
"""
from __future__ import annotations

import contextlib
import time

from torch import nn
import torch

from robustlab.attacks.accuracy import NO_PREDICTION, fraction, predict
from robustlab.protocols.cascade import run_cascade


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, protocols: list, eps: float, norm: str = "linf",
             batch_size: int = 500, autocast=contextlib.nullcontext) -> dict:
    """``{"n", "clean_acc", "clean_correct": bool[n], "nonfinite": points with non-finite logits, "seconds",
    <protocol title>: {"robust_acc", "robust": bool[n], "attack": its PGD/FGSM settings or None}}``."""
    t0 = time.perf_counter()
    predicted = predict(model, x, batch_size, autocast)
    clean = predicted == y
    result = {"n": int(len(y)), "clean_acc": fraction(clean), "clean_correct": clean.cpu(),
              "nonfinite": int((predicted == NO_PREDICTION).sum())}
    for protocol in protocols:
        stages = protocol.stages(eps, norm)
        res = run_cascade(model, x, y, stages, chunk=batch_size, batch_size=batch_size, autocast=autocast, clean=clean)
        spec = protocol.pgd_spec(eps, norm)
        result[protocol.title(eps, norm)] = {"robust_acc": res["robust_acc"], "robust": res["robust"],
                                             "attack": spec.to_dict() if spec is not None else None}
    result["seconds"] = time.perf_counter() - t0
    return result
