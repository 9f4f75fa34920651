"""Where a command may write. The rule for every command: an output never replaces a file robustlab did not write
for that same command and target, and inside a run, study or transfer folder a command writes only to what it owns
there (``robustlab eval`` under ``eval/``, ``sharpness`` under ``sharpness/``, ``export`` under ``export/``).
Anything else is refused with one line before any work is done.

A result file says who wrote it for what in its ``written_by`` entry (:func:`stamp`); :func:`check_out_file`
compares it with the command about to write. The checks run before the (possibly hours-long) work, so a refusal
costs nothing and changes nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

from robustlab.core.errors import ConfigError

# the files whose presence marks a folder as robustlab's own, and what kind of folder it is
FOLDER_MARKS = (("study.json", "study"), ("transfer.json", "transfer study"), ("config.yaml", "run"))


def folder_kind(path: Path) -> str | None:
    """'run', 'study', 'transfer study' or None: what robustlab folder ``path`` is."""
    path = Path(path)
    if not path.is_dir():
        return None
    for mark, kind in FOLDER_MARKS:
        if (path / mark).is_file():
            if kind == "run" and not ((path / "results.json").exists() or (path / "checkpoints").is_dir()):
                continue        # a folder that only holds somebody's config.yaml is not a run
            return kind
    return None


def enclosing_folder(path: Path) -> tuple[str, Path] | None:
    """The nearest robustlab folder that holds ``path`` (strictly above it), as (kind, folder), or None."""
    for parent in Path(path).absolute().parents:
        kind = folder_kind(parent)
        if kind is not None:
            return kind, parent
    return None


def _file_in_the_way(path: Path, flag: str) -> None:
    """A parent of ``path`` that exists as a file: nothing can be created below it."""
    for parent in Path(path).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag}: {parent} is a file; {path} cannot be created inside it")
            return


def stamp(command: str, target: str) -> dict:
    """The ``written_by`` entry of a result file."""
    return {"command": command, "target": str(target)}


_NOT_JSON = object()


def _json(path: Path):
    """The parsed JSON of a file, or ``_NOT_JSON`` (unreadable, not JSON)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return _NOT_JSON


def written_by(path: Path) -> dict | None:
    """The ``written_by`` entry of an existing JSON file, or None (not JSON, or not stamped)."""
    data = _json(path)
    return data.get("written_by") if isinstance(data, dict) else None


def check_out_file(path: str | Path, flag: str, command: str, target: str, suffixes: tuple[str, ...] = (".json",),
                   owned: str | None = None, companions: tuple[str, ...] = (), force: bool = False,
                   stamp_suffix: str | None = None) -> Path:
    """Refuse, with one line, an output file ``path`` that ``command`` for ``target`` may not write:

    - a parent that is a file, a path that is a folder, a suffix other than ``suffixes``;
    - a path inside a run / study / transfer folder but not under its ``owned`` subfolder;
    - an existing file (or companion, e.g. ``.md``) not stamped as written by this command for this target
      (``force``: allowed, and the caller says what it replaces). The stamp is read from the file itself, or from
      its ``stamp_suffix`` companion (a ``.safetensors`` export's ``.json``). An unstamped JSON file under the
      command's own subfolder of a robustlab folder was written there by an earlier robustlab: it counts as its own.
    Returns the path."""
    path = Path(path)
    _file_in_the_way(path, flag)
    if path.is_dir():
        raise ConfigError(f"{flag}: {path} is a folder; give a {' or '.join(suffixes)} file path")
    if path.suffix not in suffixes:
        raise ConfigError(f"{flag}: got {path}; expected a {' or '.join(suffixes)} file")
    inside = enclosing_folder(path)
    if inside is not None:
        kind, folder = inside
        rel = path.absolute().relative_to(folder)
        if owned is None or rel.parts[0] != owned or len(rel.parts) < 2:
            where = f"only under {folder / owned}/" if owned else "nothing there"
            raise ConfigError(f"{flag}: {path} is inside the {kind} folder {folder}, where robustlab {command} writes "
                              f"{where}; choose a path there or outside the folder")
    if force:
        return path
    mine = stamp(command, target)
    holder = path.with_suffix(stamp_suffix) if stamp_suffix else path
    stamped = written_by(holder) if path.exists() else None
    legacy = inside is not None and stamped is None and _json(holder) is not _NOT_JSON
    if path.exists() and stamped != mine and not legacy:
        why = ("was not written by robustlab" if stamped is None else
               f"was written by robustlab {stamped.get('command')} for {stamped.get('target')}")
        raise ConfigError(f"{flag}: {path} exists and {why}, not by robustlab {command} for {target}; choose another "
                          "path (or delete it, or add --force to replace it)")
    for suffix in companions:
        other = path.with_suffix(suffix)
        if other.exists() and not path.exists():
            raise ConfigError(f"{flag}: {other} exists and was not written by robustlab {command} for {target}; "
                              "choose another path (or delete it, or add --force to replace it)")
    return path


def check_out_folder(path: str | Path, flag: str, kind: str, marker: str) -> Path:
    """Refuse, with one line, an output folder that is a file, sits below a file, is a robustlab folder of another
    kind, sits inside another robustlab folder, or is a non-empty folder of somebody else's (no ``marker`` file).
    ``kind`` is what the command makes ('run', 'study', 'transfer study')."""
    path = Path(path)
    _file_in_the_way(path, flag)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}: {path} is a file; give a folder for the {kind}")
    found = folder_kind(path)
    if found is not None and found != kind:
        raise ConfigError(f"{flag}: {path} is a {found} folder; give a new folder for the {kind}")
    inside = enclosing_folder(path)
    if inside is not None and inside[0] == "study" and kind == "run":
        return path                  # a study's trials are runs inside it, laid out by the sweep
    if inside is not None:
        raise ConfigError(f"{flag}: {path} is inside the {inside[0]} folder {inside[1]}; give a folder outside it")
    others = [p for p in path.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))] \
        if path.is_dir() else []                  # an atomic write in flight (another rank) is not somebody's file
    if found is None and not (path / marker).exists() and others:
        raise ConfigError(f"{flag}: {path} is a folder of other files (no {marker}); give a new or empty folder "
                          f"for the {kind}")
    return path
