"""Scoped changes of module attributes: set one attribute on many modules, and restore each module's own value on exit,
also after an exception. The mode switches of attacks (BatchNorm statistics frozen for extra optimiser passes) and the
branch choice of split BatchNorm are built on it."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable

from torch import nn


@contextmanager
def attribute_set(modules: Iterable[nn.Module], name: str, value: Any):
    """``setattr(m, name, value)`` for every module inside the block; every module gets its own value back on exit."""
    modules = list(modules)
    saved = [(m, getattr(m, name)) for m in modules]
    try:
        for m in modules:
            setattr(m, name, value)
        yield
    finally:
        for m, old in saved:
            setattr(m, name, old)
