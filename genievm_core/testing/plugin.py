"""The pytest plugin of GenieVM (entry point ``pytest11: genievm``): fixtures for plugin tests.

Loaded by pytest in every environment where genievm-core is installed, so it
imports nothing heavy until a fixture is used.

- ``genievm_host``: a ``PluginHost`` with the installed plugins (entry points)
  and ``memory://NAME`` storage; plugins named in ``GENIEVM_TEST_DISABLED_PLUGINS``
  (comma-separated: ``genievm --disable-plugin X plugins --check`` sets it) are not loaded.
- ``memory_storage``: a fresh, empty ``MemoryStorage``.
- ``genievm_repository``: a new unencrypted ``Repository`` (64 KiB chunks) on
  the test's ``memory_storage``.

The contract suites (``ProviderContract``, ``CBTSourceContract``,
``StorageContract``, ``VerifierContract``) use these fixtures; a test module
may override any of them.
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from genievm_core.plugin import PluginHost
    from genievm_core.repository import Repository
    from genievm_core.testing.memory import MemoryStorage

_names = itertools.count()


@pytest.fixture(scope="session")
def genievm_host() -> PluginHost:
    from genievm_core.plugin import PluginHost
    from genievm_core.testing.memory import MemoryStoragePlugin

    disabled = [n for n in os.environ.get("GENIEVM_TEST_DISABLED_PLUGINS", "").split(",") if n]
    return PluginHost(disabled=disabled, extra_plugins=[("memory", MemoryStoragePlugin())])


@pytest.fixture
def memory_storage() -> MemoryStorage:
    from genievm_core.testing.memory import MemoryStorage

    return MemoryStorage(f"memory://genievm-test-{next(_names)}")


@pytest.fixture
def genievm_repository(memory_storage: MemoryStorage) -> Repository:
    from genievm_core.repository import Repository

    return Repository.init(memory_storage, passphrase=None, chunk_size=65536)
