"""A small name -> class registry with helpful errors, shared by tasks and models.

    >>> reg = Registry("task")
    >>> @reg.register("copy")
    ... class Copy: ...
    >>> reg.get("cpy")
    Traceback (most recent call last):
    UnknownNameError: unknown task 'cpy'; did you mean 'copy'? (valid: copy)
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

from membench.checks import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError):
    """An unknown task, model, preset or executor name: the message lists the closest valid names."""


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """One line: what was asked for, what it probably meant, what is valid."""
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (valid: {', '.join(valid)})"


class Registry(Generic[T]):
    """Maps names to classes; `register` is a decorator, `get` suggests close names for typos."""

    def __init__(self, kind: str, package: str | None = None, plugins: bool = False) -> None:
        self.kind = kind
        self._package = package  # modules in this package are imported on first use
        self._plugins = plugins  # then included folders and entry points (membench.plugins)
        self._items: dict[str, T] = {}
        self._order: dict[str, int] = {}
        self._sources: dict[str, str] = {}
        self._loaded = package is None and not plugins

    def register(self, name: str, order: int = 100) -> Callable[[T], T]:
        """Decorator; `order` sorts listings (lower first, then by name)."""

        def decorator(cls: T) -> T:
            if name in self._items and self._items[name] is not cls:
                raise ConfigError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = cls
            self._order[name] = order
            self._sources[name] = _source_of(cls)
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def unregister(self, name: str) -> None:
        """Forget `name` (tests register throw-away entries and remove them afterwards)."""
        self._items.pop(name, None)
        self._order.pop(name, None)
        self._sources.pop(name, None)

    def _load(self) -> None:
        """Import every module of the package once, so that their decorators run."""
        if self._loaded:
            return
        self._loaded = True
        if self._package is not None:
            pkg = importlib.import_module(self._package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self._package}.{info.name}")
        if self._plugins:
            from membench import plugins

            plugins.load_plugins(self)

    def registered(self) -> list[str]:
        """The names registered so far, without loading anything."""
        return list(self._items)

    def source(self, name: str) -> str:
        """Where `name` came from: "membench", "include DIR/file.py", "entry point DIST" or its module."""
        self._load()
        return self._sources[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items, key=lambda n: (self._order[n], n))

    def get(self, name: str) -> T:
        """The class registered as `name`; with plugins on, an import path 'pkg.mod:Class' (or 'hf:TYPE')
        is resolved by membench.plugins."""
        self._load()
        if name not in self._items:
            from membench import plugins

            if self._plugins and plugins.is_import_path(name):
                return plugins.resolve(self.kind, name)
            hint = "; or an import path MODULE:CLASS" if self._plugins else ""
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names()) + hint)
        return self._items[name]


def _source_of(cls) -> str:
    """The plugin being imported, "membench" for the package's own classes, else the defining module."""
    from membench import plugins

    module = getattr(cls, "__module__", "") or ""
    return plugins.current_source() or ("membench" if module.startswith("membench.") else module)
