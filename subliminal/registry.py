"""Registries: the one way the lab's components plug in.

    @CHANNELS.register("numbers")          # in subliminal/channels/numbers.py
    class NumbersChannel: ...

A registry holds the components of one kind — traits' families, injections, channels, filter
rule sets, audits, scan parts, generation backends — by name. A component registers itself
with the decorator in its own module; the registry finds every module of its package by
importing them on first lookup (`pkgutil`), so adding a component is adding a module: no list
to edit, no import to add. Lookups of an unknown name are a one-line error listing the names.
Registries sit at the bottom of the import graph: a package's `__init__` creates its registry
and never imports its own plugins (they import it), so no cycle is possible
(`tests/test_layers.py` checks the whole import graph).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from subliminal.errors import SubliminalError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named components of one kind, discovered in the modules of `package`."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind, self.package = kind, package
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._found = package is None

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: file the decorated object under `name` (with optional metadata)."""
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name], self._meta[name] = obj, meta
            return obj
        return deco

    def discover(self) -> None:
        """Import every module of the package once, so their registrations run."""
        if self._found:
            return
        self._found = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{self.package}."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)

    def get(self, name: str) -> T:
        self.discover()
        if name not in self._items:
            raise SubliminalError(f"unknown {self.kind} {name!r}; choose one of: "
                                  f"{', '.join(self.names())}")
        return self._items[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def names(self) -> list[str]:
        self.discover()
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name in self._items

    def items(self) -> Iterator[tuple[str, T]]:
        self.discover()
        return iter(list(self._items.items()))
