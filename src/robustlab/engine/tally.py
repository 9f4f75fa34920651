"""The training statistics of one epoch, kept on the device (no host sync per step): the loss, the accuracy on the
method's inputs and every metric the method reports (``out.metrics``, e.g. regulariser terms and weights), each
averaged over the epoch's examples across all ranks; and whether any step's loss was non-finite."""
from __future__ import annotations

import torch


class EpochTally:
    def __init__(self, device: torch.device):
        self.device = device
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.extra: dict[str, torch.Tensor] = {}
        self.seen = 0

    def add(self, out, y: torch.Tensor) -> None:
        """One step's output (``loss``, ``logits``, ``metrics``) on a batch with labels ``y``."""
        n = len(y)
        loss = out.loss.detach()
        self.bad |= ~torch.isfinite(loss)
        self.loss_sum += loss.float() * n
        self.correct += (out.logits.detach().argmax(1) == y).sum()
        for k, v in out.metrics.items():
            self.extra[k] = self.extra.get(k, 0.0) + v.detach().float() * n
        self.seen += n

    def columns(self, dist) -> dict:
        """``train_loss``, ``train_acc`` and the method's metrics, over all ranks' examples."""
        keys = sorted(self.extra)
        sums = dist.sum(torch.stack([self.loss_sum.float(), self.correct.float(),
                                     torch.tensor(float(self.seen), device=self.device)]
                                    + [self.extra[k] for k in keys])).tolist()
        row = {"train_loss": sums[0] / sums[2], "train_acc": sums[1] / sums[2]}
        row.update({k: sums[3 + j] / sums[2] for j, k in enumerate(keys)})
        return row
