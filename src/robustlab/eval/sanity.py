"""Sanity checks for a robustness evaluation: signs that the number is an artefact of gradient masking or of
the evaluation set-up rather than robustness (Carlini et al., 2019, "On evaluating adversarial robustness";
Athalye et al., 2018). Each check returns a flag with a one-line explanation; every ``robustlab eval``
report carries them.

On the first ``n`` points (PGD with step eps/4 unless stated):

- ``train_mode``: a module of the model handed in is in training mode (BatchNorm batch statistics, dropout);
- ``randomness``: two eval-mode forward passes of the same inputs differ (a randomised defence needs EOT);
- ``zero_gradients``: fraction of points whose input gradient of the logit margin
  :math:`\\max_{j\\ne y} z_j - z_y` is all zero or non-finite (the margin does not saturate like the
  cross-entropy does, so zeros mean a piecewise-constant or broken model), flagged above 10 %;
- ``eps_monotone``: PGD-20 robust accuracy over eps x (1/4, 1/2, 1, 2) must not rise with eps;
- ``large_eps``: at a very large eps (L-inf 0.5, which reaches a grey image; L2 0.5 sqrt(d)) PGD-50
  must drive robust accuracy to <= 5 %;
- ``more_iterations``: PGD-100 with 3 restarts must not give a higher robust accuracy than PGD-10;
- ``black_box_beats_white_box``: when AutoAttack ran, Square (black-box, last) must not fool more than
  0.2 % of the points that every white-box attack missed (AutoAttack's own threshold).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from robustlab.attacks.accuracy import fraction
from robustlab.core.progress import Progress
from robustlab.protocols import evaluate, pgd_protocol

TOLERANCE = 0.02   # accuracy slack for comparisons between attacks on a few hundred points


def _flag(name: str, passed: bool, value, note: str) -> dict:
    return {"check": name, "passed": bool(passed), "value": value, "note": note}


def margin_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample input gradient of max_{j != y} z_j - z_y (eval mode)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = model(x).float()
        other = z.masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(), -math.inf).amax(1)
        (g,) = torch.autograd.grad((other - z.gather(1, y[:, None]).squeeze(1)).sum(), x)
    return g


def _robust(model, x, y, eps, norm, steps, restarts, batch_size) -> float:
    protocol = pgd_protocol(steps, restarts)
    return evaluate(model, x, y, [protocol], eps, norm, batch_size)[protocol.title(eps, norm)]["robust_acc"]


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
                  n: int = 200, batch_size: int = 500, cascade: dict | None = None,
                  log: Callable[[str], None] = lambda s: None) -> list[dict]:
    """The flags above for ``model`` on the first ``n`` of (x, y); ``cascade`` is a run_cascade result. Progress:
    a line per attack run, with elapsed time and ETA (``log``)."""
    scales = (0.25, 0.5, 1.0, 2.0)
    # the attack runs below, weighted by their iterations: 4 x PGD-20, PGD-50, PGD-10, PGD-100-3
    runs = Progress("sanity checks", len(scales) * 20 + 50 + 10 + 300, log, every=0.0, unit="attack iterations")

    def robust(e, steps, restarts, what):
        acc = _robust(model, x, y, e, norm, steps, restarts, batch_size)
        runs.advance(steps * restarts, f"{what}: PGD-{steps}-{restarts} at eps {e:.4g} leaves {acc:.1%} robust")
        return acc
    in_train = [name or "model" for name, m in model.named_modules() if m.training]
    flags = [_flag("train_mode", not in_train, len(in_train),
                   "model in eval mode" if not in_train else
                   f"{len(in_train)} modules were in training mode ({', '.join(in_train[:3])}...): evaluate in eval mode")]
    model.eval()
    x, y = x[:n], y[:n]
    with torch.no_grad():
        a, b = model(x).float(), model(x).float()
    diff = float((a - b).abs().max()) if len(x) else 0.0
    flags.append(_flag("randomness", diff <= 1e-5, diff, "deterministic forward pass" if diff <= 1e-5 else
                       "two forward passes differ: a randomised model needs EOT attacks, plain PGD overestimates it"))
    g = margin_gradients(model, x, y).flatten(1)
    bad = fraction((g == 0).all(1) | ~torch.isfinite(g).all(1), empty=0.0)
    flags.append(_flag("zero_gradients", bad <= 0.1, bad, f"{bad:.0%} of points have an all-zero or non-finite input "
                       "gradient" + (" (gradient masking: use BPDA / black-box attacks)" if bad > 0.1 else "")))
    accs = [robust(s * eps, 20, 1, "eps_monotone") for s in scales]
    rises = max((accs[i + 1] - accs[i] for i in range(len(accs) - 1)), default=0.0)
    flags.append(_flag("eps_monotone", rises <= TOLERANCE, dict(zip([f"{s:g}eps" for s in scales], accs)),
                       "robust accuracy falls with eps" if rises <= TOLERANCE else
                       f"robust accuracy rises by {rises:.3f} with a larger eps: the attack is failing, not the model robust"))
    big = 0.5 if norm == "linf" else 0.5 * math.sqrt(x[0].numel())
    acc_big = robust(big, 50, 1, "large_eps")
    flags.append(_flag("large_eps", acc_big <= 0.05, acc_big, f"at eps {big:.3g} PGD-50 leaves {acc_big:.1%} robust"
                       + ("" if acc_big <= 0.05 else ": an unbounded attacker must win; gradients are not guiding PGD")))
    few, many = robust(eps, 10, 1, "more_iterations"), robust(eps, 100, 3, "more_iterations")
    flags.append(_flag("more_iterations", many <= few + TOLERANCE, {"PGD-10-1": few, "PGD-100-3": many},
                       "more iterations and restarts do not help the model" if many <= few + TOLERANCE else
                       "PGD-100-3 leaves more points robust than PGD-10: the attack is not converging"))
    if cascade is not None and "square" in cascade.get("fooled_by", {}):
        frac = int(cascade["fooled_by"]["square"].sum()) / max(1, cascade["n"])
        flags.append(_flag("black_box_beats_white_box", frac <= 0.002, frac,
                           f"Square fooled {frac:.2%} of the points every white-box attack missed"
                           + ("" if frac <= 0.002 else ": gradient masking likely")))
    return flags


def flags_markdown(flags: list[dict]) -> str:
    lines = ["| check | result | note |", "|---|---|---|"]
    lines += [f"| {f['check']} | {'ok' if f['passed'] else '**FLAG**'} | {f['note']} |" for f in flags]
    return "\n".join(lines)
