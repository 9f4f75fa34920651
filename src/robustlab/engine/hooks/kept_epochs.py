"""Kept epochs (``train.keep_epochs`` and ``train.keep_every``): the weights after these epochs also stay as
``checkpoints/epoch_NNNN.pt``, addressable as ``RUN@N`` (early-stopped surrogates, docs/transfer.md)."""
from __future__ import annotations

from robustlab.core import checkpoint as ckpt_io
from robustlab.engine.hooks.base import RunHook


class KeptEpochs(RunHook):
    def __init__(self, epochs: list[int], every: int):
        self.epochs, self.every = set(epochs), every

    @classmethod
    def build(cls, cfg, run):
        t = cfg.train
        return cls(t.keep_epochs, t.keep_every) if t.keep_epochs or t.keep_every else None

    def keeps(self, epoch: int) -> bool:
        """Whether the weights after this (1-based) epoch are kept."""
        return epoch in self.epochs or (self.every > 0 and epoch % self.every == 0)

    def persist(self, run, epoch: int, row: dict) -> None:
        if self.keeps(epoch + 1):
            run.write(ckpt_io.save_weights, run.ckpt_dir / ckpt_io.epoch_file(epoch + 1), model=run.model,
                      epoch=epoch + 1, config=run.cfg.to_dict(), metrics=row)
