"""Per-point boolean flags as text ("0110..."): how resumable evaluation states (the cascade's, a transfer study's
judged pairs) store which points were attacked, fooled or correct, one character per point, in JSON."""
from __future__ import annotations

import torch


def flags_text(flags: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in flags.tolist())


def flags_tensor(text: str) -> torch.Tensor:
    return torch.tensor([c == "1" for c in text], dtype=torch.bool)
