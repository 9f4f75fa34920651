r"""Temporal ensembling (TE) against robust overfitting (Dong et al., ICLR 2022, "Exploring Memorization in
Adversarial Training", the TE regulariser; docs/memorisation.md): a per-sample memory of the model's clean predictions, and a penalty that
pulls the predictions towards it.

For TE epochs e (1-based) >= e_s, at each batch, with p_i the clean **eval-mode** probabilities (detached):

.. math::
    \tilde P_i \leftarrow m\,\tilde P_i + (1-m)\,p_i, \qquad q_i = \tilde P_i / \textstyle\sum_k \tilde P_{ik},\qquad
    R_{TE} = \frac{w(e)}{B K}\sum_i\sum_k (\mathrm{softmax}(f_\theta(\cdot))_{ik} - q_{ik})^2

with the memory initialised to zeros (so at the first TE epoch q_i is the current eval-mode prediction), m = 0.9,
and w(e) = W r(e), W = 300, r(e) = 0 before e_s, exp(-5 (1 - (e - e_s)/(e_e - e_s))^2) from e_s to e_e, 1 after.
e_s, e_e are epochs or fractions of the run (default 0.45 T and 0.75 T: the reference's 90 and 150 at T = 200).
PGD-AT+TE adds R_TE to the attack's objective and at x_adv in the loss; TRADES+TE to the attack and at the clean
point. The memory lives on the device (N x K), is checkpointed, and under DDP every rank's (index, p) rows reach
every rank's memory (an all-gather), so all ranks hold the same memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.attacks.modes import attack_mode
from robustlab.core.context import BuildContext
from robustlab.core.errors import ConfigError
from robustlab.core.schema import spec


@dataclass
class TEConfig:
    weight: float = spec(300.0, lo=0.0, doc="W, the weight once the ramp is complete")
    momentum: float = spec(0.9, lo=0.0, hi=1.0, doc="m, the memory's momentum")
    start: float = spec(0.45, lo=0.0, doc="e_s: first TE epoch (unit: fraction of train.epochs, or epoch)")
    end: float = spec(0.75, lo=0.0, doc="e_e: end of the ramp")
    unit: str = spec("fraction", choices=["fraction", "epoch"], doc="how start and end are given")

    def uses_total_epochs(self) -> bool:
        return self.unit == "fraction"

    def check(self, key: str) -> None:
        if self.end < self.start:
            raise ConfigError(f"{key}end: got {self.end:g}; must be >= start ({self.start:g})")
        if self.unit == "fraction" and self.end > 1:
            raise ConfigError(f"{key}end: got {self.end:g}; a fraction of the run is <= 1 (or set unit: epoch)")


@torch.no_grad()
def clean_probabilities(model, x: torch.Tensor, mode: str = "eval") -> torch.Tensor:
    """softmax(f(x)) with the model in ``mode`` (flags restored), detached: TE's memory input and TRADES' reference."""
    with attack_mode(model, mode):
        return F.softmax(model(x).float(), 1)


def te_ramp(e: int, e_s: float, e_e: float) -> float:
    """r(e) for the 1-based epoch e: 0 before e_s, the sigmoid-shaped ramp up to e_e, then 1."""
    if e < e_s:
        return 0.0
    if e >= e_e:
        return 1.0
    return math.exp(-5.0 * (1.0 - (e - e_s) / (e_e - e_s)) ** 2)


class TemporalEnsemble:
    def __init__(self, cfg: TEConfig, bctx: BuildContext):
        self.cfg = cfg
        self.dist = bctx.dist
        scale = bctx.epochs if cfg.unit == "fraction" else 1.0
        self.e_s, self.e_e = cfg.start * scale, cfg.end * scale
        self.memory = torch.zeros(bctx.train_size, bctx.num_classes, device=bctx.device)
        self.weight_now = 0.0
        self._weight_tensor = torch.zeros((), device=bctx.device)

    def on_epoch_start(self, epoch: int) -> None:
        """``epoch`` is 0-based: the weight of epoch e = epoch + 1."""
        self.weight_now = self.cfg.weight * te_ramp(epoch + 1, self.e_s, self.e_e)
        self._weight_tensor = torch.tensor(self.weight_now, device=self.memory.device)

    @property
    def active(self) -> bool:
        return self.weight_now > 0

    @property
    def weight_tensor(self) -> torch.Tensor:
        """The current weight on the memory's device (made once per epoch, not per step: for logging)."""
        return self._weight_tensor

    @torch.no_grad()
    def update(self, index: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Fold this step's predictions (every rank's) into the memory; return the normalised targets of ``index``.
        Under DDP the rows travel as one packed float64 tensor [index, probs] (one gather, indices exact below 2^53)."""
        rows = torch.cat([index.to(self.memory.device, torch.float64)[:, None],
                          probs.to(self.memory.device, torch.float64)], 1)
        rows = self.dist.gather_rows(rows)
        all_index, all_probs = rows[:, 0].long(), rows[:, 1:].float()
        m = self.cfg.momentum
        self.memory[all_index] = m * self.memory[all_index] + (1 - m) * all_probs
        rows = self.memory[index.to(self.memory.device)]
        return rows / rows.sum(1, keepdim=True)

    def state_dict(self) -> dict:
        return {"memory": self.memory.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.memory.copy_(state["memory"])
