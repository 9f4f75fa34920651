r"""Label interventions: symmetric label noise and random labels (Dong et al., ICLR 2022, "Exploring Memorization
in Adversarial Training"; docs/memorisation.md).

Symmetric noise with rate r over K classes uses the transition matrix :math:`P = \frac rK\mathbf 1 + (1-r)I`:
each label is redrawn uniformly over all K classes with probability r (so the original class can come
back); r = 1 gives completely random labels. Unlike the reference code (an unseeded RandomState), the
draw is seeded, and the trainer saves the labels in the run folder.
"""
from __future__ import annotations

import torch


def symmetric_noise(y: torch.Tensor, num_classes: int, rate: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    redraw = torch.rand(len(y), generator=g) < rate
    random = torch.randint(0, num_classes, (len(y),), generator=g)
    return torch.where(redraw, random, y.cpu()).to(y.device)
