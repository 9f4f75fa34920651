"""An in-memory loader: the data set is one tensor (on the device when it fits), shuffled by a seeded
generator, with random crop and horizontal flip done batched on the device. No per-image Python work.

Each batch carries the indices of its samples in the training set, so methods can keep per-sample
memory (temporal ensembling) and interventions can be traced.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.data.dataset import ImageSet, to_float


@dataclass
class Batch:
    x: torch.Tensor      # float images, [B, C, H, W]
    y: torch.Tensor      # labels, [B]
    index: torch.Tensor  # positions in the source set, [B]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at a random offset per image (batched)."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=generator.device).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=generator.device).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * padding)
    out = padded.gather(2, rows)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
    return out.gather(3, cols)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (batched)."""
    mask = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


class DeviceLoader:
    """Batches of an :class:`ImageSet` held in memory on ``device``.

    ``generator`` drives shuffling and augmentation; its state is part of a checkpoint, so a resumed run
    sees the same batches as an uninterrupted one. With ``shard=(rank, world)`` each batch is the
    rank's slice ``[rank::world]`` of the global batch (augmented before slicing, so the union of the
    slices is exactly the single-process batch).
    """

    def __init__(self, data: ImageSet, batch_size: int, *, shuffle: bool = False, crop_padding: int = 0,
                 flip: bool = False, drop_last: bool = False, device: str | torch.device = "cpu",
                 generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1)):
        self.x = data.x.to(device)
        self.y = data.y.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.crop_padding = crop_padding
        self.flip = flip
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.generator = generator if generator is not None else torch.Generator()
        self.rank, self.world = shard  # data-parallel: every rank draws the global batch, keeps [rank::world]

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.generator.device).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = to_float(self.x[idx])
            if self.crop_padding:
                x = random_crop(x, self.crop_padding, self.generator)
            if self.flip:
                x = random_flip(x, self.generator)
            if self.world > 1:
                part = slice(self.rank, None, self.world)
                yield Batch(x[part], self.y[idx][part], idx[part])
            else:
                yield Batch(x, self.y[idx], idx)
