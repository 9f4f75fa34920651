"""Typed, validated configuration trees: dataclasses in, one-line errors out.

A config is a tree of dataclasses. :func:`build` reads a plain mapping (from ``yaml.safe_load``) into one,
checking every key, type and range; a bad value raises :class:`ConfigError` whose message is one line naming
the dotted key, the value and what is allowed. Numbers may be written as fractions (``8/255``); they are parsed
with a regular expression, never evaluated.

**Components.** A field declared with :func:`component` holds the config of a registered component (a method,
an optimizer, a regulariser, ...). Its class is chosen by the ``name`` the user writes, so each component
validates its own keys (``method: {name: trades, beta: 6}``); a bare string is shorthand for ``{name: ...}``.

**Resolution.** After validation, :func:`resolve` walks the tree top-down and calls each node's
``resolve(parent, key)`` (fill in defaults that depend on other values: published weights, step sizes) and
``check(key)`` (cross-field rules), so the saved config states every effective value.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import field
from typing import Any

from robustlab.core.errors import ConfigError


def spec(default=dataclasses.MISSING, *, choices=None, lo=None, hi=None, lo_open=False, doc="",
         default_factory=dataclasses.MISSING):
    """A dataclass field with validation metadata: allowed ``choices`` or a range [lo, hi]."""
    meta = {"choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "doc": doc}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def component(registry, default: str | None = None, doc: str = ""):
    """A field holding the config of a component of ``registry``, selected by ``name`` (``default``: the name
    used when the key is absent; None: the field is optional and absent means null)."""
    meta = {"registry": registry, "doc": doc, "default_name": default}
    if default is None:
        return field(default=None, metadata=meta)
    return field(default_factory=lambda: registry.config_class(default)(name=default), metadata=meta)


def components(registry, doc: str = "", default_factory=list, default: str | None = None):
    """A list of component configs of ``registry`` (e.g. a method's regularisers); ``default``: the name of an entry
    that gives none."""
    return field(default_factory=default_factory, metadata={"registry": registry, "doc": doc, "default_name": default})


_FRACTION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


def parse_number(value: Any, key: str) -> float:
    """A float from a number or a fraction string such as ``"8/255"`` (parsed, never evaluated)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: got {value!r}; expected a number (e.g. 0.1 or 8/255)")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _FRACTION.match(value)
        if m:
            den = float(m.group(2))
            if den == 0:
                raise ConfigError(f"{key}: got {value!r}; the denominator must not be 0")
            return float(m.group(1)) / den
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: got {value!r}; expected a number (e.g. 0.1 or 8/255)")


def field_names(cls) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _component(value: Any, registry, key: str, default_name: str | None):
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: got {value!r}; expected a {registry.kind} name or a mapping with a 'name' key")
    name = value.get("name", default_name)
    if name is None:
        raise ConfigError(f"{key}.name: missing; allowed: {', '.join(registry)}")
    if not isinstance(name, str) or name not in registry:
        raise ConfigError(f"{key}.name: got {name!r}; allowed: {', '.join(registry)}")
    return build(registry.config_class(name), {**value, "name": name}, key + ".")


def _coerce(value: Any, tp: Any, key: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    registry = meta.get("registry")
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, meta)
    if origin in (list, typing.List):
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: got {value!r}; expected a list")
        names = [v.get("name") if registry is not None and isinstance(v, dict) and isinstance(v.get("name"), str)
                 else None for v in value]
        return [_coerce(v, item_tp, f"{key}[{entry_label(i, names)}]", meta) for i, v in enumerate(value)]
    if registry is not None:
        return _component(value, registry, key, meta.get("default_name"))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}; expected a mapping with keys {field_names(tp)}")
        return build(tp, value, key + ".")
    if value is None:
        raise ConfigError(f"{key}: got null; expected a {tp.__name__}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: got {value!r}; expected true or false")
        out = value
    elif tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}: got {value!r}; expected an integer")
        out = int(value)
    elif tp is float:
        out = parse_number(value, key)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: got {value!r}; expected a string")
        out = value
    else:  # pragma: no cover - schema error, not user error
        raise TypeError(f"unsupported config type {tp} for {key}")
    choices = meta.get("choices")
    if choices is not None and out not in choices:
        raise ConfigError(f"{key}: got {value!r}; allowed: {', '.join(map(str, choices))}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (out < lo or (meta.get("lo_open") and out == lo)):
        rel = ">" if meta.get("lo_open") else ">="
        raise ConfigError(f"{key}: got {value!r}; must be {rel} {lo:g}")
    if hi is not None and out > hi:
        raise ConfigError(f"{key}: got {value!r}; must be <= {hi:g}")
    return out


def build(cls, raw: dict, prefix: str = ""):
    """A ``cls`` instance from a mapping; unknown keys name the keys this class accepts."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in known:
            raise ConfigError(f"{prefix}{k}: unknown key; allowed keys here: {field_names(cls)}")
    kwargs = {}
    for name, f in known.items():
        if name in raw:
            kwargs[name] = _coerce(raw[name], hints[name], prefix + name, dict(f.metadata))
    return cls(**kwargs)


def entry_label(i: int, names: list) -> object:
    """How messages name entry ``i`` of a list: a component by its name where no other entry has it, else its index."""
    return names[i] if names[i] is not None and names.count(names[i]) == 1 else i


def resolve(node, key: str = "", parent=None) -> None:
    """Top-down: ``node.resolve(parent, key)`` fills derived defaults, ``node.check(key)`` enforces cross-field
    rules; then the same for every child config (``key`` is the dotted path prefix, for error messages)."""
    if hasattr(node, "resolve"):
        node.resolve(parent, key)
    if hasattr(node, "check"):
        node.check(key)
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        names = [getattr(child, "name", None) for _, child in items]
        for i, child in items:
            if dataclasses.is_dataclass(child):
                sub = f"{key}{f.name}" + (f"[{entry_label(i, names)}]" if i is not None else "")
                resolve(child, sub + ".", node)


def to_dict(node) -> dict:
    return dataclasses.asdict(node)
