"""Name -> component registries filled by decorators. Duplicates are rejected; configs name things.

A registered component may declare its own config dataclass (its ``Config`` attribute, or ``config=`` at
registration). :func:`robustlab.core.schema.component` fields pick that class by the ``name`` the user
writes, so every component validates exactly the keys it accepts.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, base_config: type | None = None):
        self.kind = kind
        self.base_config = base_config       # config class of components that declare none
        self._items: dict[str, T] = {}
        self._configs: dict[str, type | None] = {}

    def register(self, name: str, config: type | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            self._configs[name] = config if config is not None else getattr(obj, "Config", None)
            return obj
        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; allowed: {', '.join(sorted(self._items))}") from None

    def config_class(self, name: str) -> type:
        cls = self._configs.get(name) or self.base_config
        if cls is None:
            raise TypeError(f"{self.kind} {name!r} declares no config class")
        return cls

    def build(self, cfg, *args, **kwargs):
        """The component named by ``cfg.name``, constructed with ``(cfg, *args, **kwargs)``."""
        return self.get(cfg.name)(cfg, *args, **kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
