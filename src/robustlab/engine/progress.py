"""Progress: a bar on a terminal (tqdm, if installed), plain log lines otherwise."""
from __future__ import annotations

import sys


def progress_mode(setting: str) -> str:
    if setting != "auto":
        return setting
    if sys.stderr.isatty():
        try:
            import tqdm  # noqa: F401
            return "bar"
        except ImportError:
            return "lines"
    return "lines"


def wrap(iterable, mode: str, total: int, desc: str):
    if mode == "bar":
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
    return iterable


ROW_KEYS = ("epoch", "lr", "train_loss", "train_acc", "val_clean_acc", "val_pgd_acc", "test_clean_acc", "test_pgd_acc",
            "test_fgsm_acc", "seconds")     # val_pgd_acc (or val_clean_acc without an attack) picks best.pt


def format_row(row: dict) -> str:
    """The epoch's log line: the main columns of its metrics row."""
    return " ".join(f"{k}={row[k]}" if isinstance(row[k], int) else f"{k}={row[k]:.4g}"
                    for k in ROW_KEYS if row.get(k) is not None)
