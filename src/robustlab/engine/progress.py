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
