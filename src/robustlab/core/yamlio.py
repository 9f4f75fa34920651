"""The one YAML reader: PyYAML's safe loader (no object construction, nothing evaluated), with a mapping that
names the same key twice refused (PyYAML keeps the last value without a word; ``train: {epochs: 2, epochs: 3}``
would silently train 3 epochs). Errors are one line naming the file, the line and what is wrong."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from robustlab.core.errors import ConfigError


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line: int):
        super().__init__(f"key {key!r} given twice (line {line})")
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse a repeated key."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue                 # the default constructor reports an unhashable key itself
        if key in seen:
            raise DuplicateKey(key, key_node.start_mark.line + 1)
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str = "YAML") -> Any:
    """``text`` read with the safe loader, duplicate keys refused; ``source`` names it in the one-line error."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)   # noqa: S506 (a SafeLoader subclass)
    except DuplicateKey as exc:
        raise ConfigError(f"{source}: {exc}; give each key once") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise ConfigError(f"{source}{where}: not valid YAML" + (f" ({problem})" if problem else "")) from None


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """A YAML file, read as :func:`parse_yaml` reads text; a missing or unreadable file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path}: not found" if not path.exists() else f"{what} {path}: is a folder, not a file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: unreadable ({type(exc).__name__})") from None
    return parse_yaml(text, f"{what} {path}")
