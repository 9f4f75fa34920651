"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename over the target.
A crash or SIGKILL leaves either the old file or the new one, never a torn one. Files get the permissions an
ordinary ``open`` would give them (0666 less the umask), so colleagues and other nodes can read a shared folder."""
from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

from robustlab.core.errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())   # mkstemp creates 0600; a shared study folder needs the user's umask
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null, tensors become numbers or lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if torch.is_tensor(obj):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda fh: fh.write(text.encode()))


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda fh: fh.write(data))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(_clean(r)) + "\n" for r in rows))


class DamagedFile(DataError, ValueError):
    """A file robustlab wrote (atomically, so never torn by a crash) that does not parse: damage, not a state to
    read around. The message is one line naming the file (and the line)."""


def read_json(path: Path) -> Any:
    """A JSON file; one that does not parse raises :class:`DamagedFile` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise DamagedFile(f"{path}: damaged, not JSON{where}") from None


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per line (a missing file: no rows). Every robustlab JSONL file is written atomically, so a
    line that does not parse (a torn last line included) is damage: :class:`DamagedFile` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise DamagedFile(f"{path}: line {number} is not JSON (the file is damaged)") from None
    return rows


def save_torch(path: Path, obj: Any) -> None:
    _atomic(path, lambda fh: torch.save(obj, fh))


def load_torch(path: Path, map_location="cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, no code runs. A file that is
    not a torch file (text, a truncated write) raises ``ValueError`` saying so (torch's own message would advise
    ``weights_only=False``, the unsafe way)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) and "Unsupported global" in str(exc):
            raise                       # a real pickle with code in it: keep torch's refusal
        raise ValueError(f"{path}: not a torch checkpoint (or a truncated one)") from None
    except (RuntimeError, EOFError) as exc:
        raise ValueError(f"{path}: not a torch checkpoint (or a truncated one): {str(exc).splitlines()[0]}") from None
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, UnicodeDecodeError, OSError):
        # a text or other non-torch file makes the unpickler fail in many ways (e.g. KeyError: 101)
        raise ValueError(f"{path}: not a torch checkpoint (or a truncated one)") from None
