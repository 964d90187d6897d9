"""``MemoryStorage``: a real ``StorageTarget`` held in a dict, for tests and self-checks.

It passes ``StorageContract`` like the filesystem and S3 targets: puts are
atomic (the dict holds immutable ``bytes``, swapped under a lock), keys are
checked, listing is by plain string prefix. ``memory://NAME`` URLs opened
through the ``memory`` storage plugin (registered by the ``genievm_host``
fixture, never by the installed CLI) share one store per name within the
process, so a repository written by one ``Repository`` can be opened again.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from genievm_core.errors import ObjectNotFoundError, StorageError
from genievm_core.plugin import StorageRegistry, hookimpl

__all__ = ["MemoryStorage", "MemoryStoragePlugin", "open_memory_storage"]


class MemoryStorage:
    """Objects in a dict, guarded by a lock."""

    def __init__(self, url: str = "memory://test") -> None:
        self.url = url
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _check(self, key: str) -> str:
        parts = key.split("/")
        if not key or not key.isascii() or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"storage {self.url}: invalid object key {key!r}")
        return key

    def put(self, key: str, data: bytes | bytearray) -> None:
        value = bytes(data)  # a copy: the caller may reuse its buffer
        with self._lock:
            self._objects[self._check(key)] = value

    def get(self, key: str) -> bytes:
        with self._lock:
            try:
                return self._objects[self._check(key)]
            except KeyError:
                raise ObjectNotFoundError(f"storage {self.url}: object {key} not found") from None

    def exists(self, key: str) -> bool:
        with self._lock:
            return self._check(key) in self._objects

    def list(self, prefix: str) -> Iterator[str]:
        with self._lock:
            keys = [k for k in self._objects if k.startswith(prefix)]
        return iter(keys)

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(self._check(key), None)

    def close(self) -> None:
        pass

    def keys(self) -> builtins.list[str]:
        """Every key, sorted (for tests that inspect what a repository wrote)."""
        with self._lock:
            return sorted(self._objects)


class MemoryStoragePlugin:
    """A plugin registering ``memory://NAME`` storage; each name is one store, kept by this plugin."""

    def __init__(self) -> None:
        self.stores: dict[str, MemoryStorage] = {}

    def open(self, url: str, options: Mapping[str, Any]) -> MemoryStorage:
        return self.stores.setdefault(url, MemoryStorage(url))

    @hookimpl
    def genievm_register_storage(self, registry: StorageRegistry) -> None:
        registry.add("memory", self.open)


def open_memory_storage(url: str, options: Mapping[str, Any]) -> MemoryStorage:
    """A new, empty store (a ``StorageFactory``)."""
    return MemoryStorage(url)
