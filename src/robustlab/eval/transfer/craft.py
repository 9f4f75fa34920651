"""Crafting: the adversarial examples of every (attack, surrogate) pair, chunk by chunk, each chunk stored as
``adv/<attack>/<surrogate>/chunk_NNNN.pt`` the moment it is done, so an interrupted study resumes without crafting a
chunk twice. A chunk's random draws (DI) come from ``seed + chunk``: they do not depend on where a resume began."""
from __future__ import annotations

from pathlib import Path

import torch

from robustlab.attacks.transfer import TRANSFER_ATTACKS
from robustlab.core.io import load_torch, save_torch
from robustlab.core.progress import Progress


def chunk_path(out: Path, attack_label: str, surrogate_key: str, chunk: int) -> Path:
    return out / "adv" / attack_label / surrogate_key / f"chunk_{chunk:04d}.pt"


def craft(study, x: torch.Tensor, y: torch.Tensor) -> int:
    """Craft every missing chunk; returns how many were crafted."""
    cfg, crafted = study.cfg, 0
    chunks = range(0, len(y), cfg.chunk)
    for attack in cfg.attacks:
        for s in study.surrogates:
            todo = [c for c in range(len(chunks)) if not chunk_path(study.out, attack.label, s.key, c).is_file()]
            if not todo:
                continue
            atk = TRANSFER_ATTACKS.build(attack, study.model(s))
            progress = Progress(f"craft {attack.label} on {s.key} ({s.label})", len(todo), study.log, unit="chunks")
            for c in todo:
                lo = c * cfg.chunk
                atk.generator = torch.Generator().manual_seed(attack.seed + c)
                xs, ys = x[lo:lo + cfg.chunk], y[lo:lo + cfg.chunk]
                adv = torch.cat([atk(xs[i:i + cfg.batch_size], ys[i:i + cfg.batch_size])
                                 for i in range(0, len(ys), cfg.batch_size)])
                save_torch(chunk_path(study.out, attack.label, s.key, c), {"x_adv": adv.cpu(), "start": lo})
                crafted += 1
                progress.advance(1)
    return crafted


def adversarial(study, attack_label: str, surrogate_key: str, n: int) -> torch.Tensor:
    """The first n adversarial examples of a pair, from its chunks."""
    return torch.cat([load_torch(chunk_path(study.out, attack_label, surrogate_key, c))["x_adv"]
                      for c in range(-(-n // study.cfg.chunk))])[:n]
