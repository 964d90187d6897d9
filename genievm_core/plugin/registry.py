"""Registry objects passed to the ``genievm_register_*`` hooks.

Each keeps, for every name it holds, the object and the plugin that registered
it, so ``genievm plugins`` can say who provides what and a clash names both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from genievm_core.errors import PluginError
from genievm_core.plugin.protocols import CBTSource, ProviderFactory, StorageFactory, Verifier

__all__ = [
    "CBTSourceRegistry",
    "ProviderRegistry",
    "Registered",
    "Registry",
    "SelfCheckRegistry",
    "StorageRegistry",
    "VerifierRegistry",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Registered(Generic[T]):
    name: str
    value: T
    plugin: str


class Registry(Generic[T]):
    """Names to registered objects, for one kind of plugin."""

    kind = "object"

    def __init__(self) -> None:
        self._items: dict[str, Registered[T]] = {}
        self.current_plugin = "?"

    def _add(self, name: str, value: T) -> None:
        if name in self._items:
            other = self._items[name].plugin
            raise PluginError(f"plugin {self.current_plugin}: {self.kind} {name!r} is already registered by {other}")
        self._items[name] = Registered(name, value, self.current_plugin)

    def get(self, name: str) -> T:
        try:
            return self._items[name].value
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise PluginError(f"no {self.kind} named {name!r} is installed (installed: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[Registered[T]]:
        return iter(self._items.values())

    def names(self) -> list[str]:
        return sorted(self._items)


class ProviderRegistry(Registry[ProviderFactory]):
    kind = "provider"

    def add(self, name: str, factory: ProviderFactory) -> None:
        """Register ``factory(options) -> Provider`` under ``name`` (``kvm``, ``vmware``)."""
        self._add(name, factory)


class CBTSourceRegistry(Registry[CBTSource]):
    kind = "CBT source"

    def add(self, source: CBTSource) -> None:
        """Register a CBT source under ``source.name``."""
        self._add(source.name, source)

    def by_priority(self) -> list[CBTSource]:
        return sorted((r.value for r in self), key=lambda s: -s.priority)


class StorageRegistry(Registry[StorageFactory]):
    kind = "storage target"

    def add(self, scheme: str, factory: StorageFactory) -> None:
        """Register ``factory(url, options) -> StorageTarget`` for URLs ``scheme://...``."""
        self._add(scheme, factory)


class VerifierRegistry(Registry[Verifier]):
    kind = "verifier"

    def add(self, verifier: Verifier) -> None:
        """Register a verifier under ``verifier.name``."""
        self._add(verifier.name, verifier)


class SelfCheckRegistry(Registry[str]):
    kind = "self-check"

    def add(self, name: str, tests: str) -> None:
        """Register the contract tests ``genievm plugins --check`` runs under ``name``.

        ``tests`` is an importable module of pytest test classes (``my_plugin.checks``),
        optionally with one class (``my_plugin.checks::TestMyProvider``); they must
        need nothing but a temporary folder.
        """
        self._add(name, tests)
