"""The contract suites of genievm_core.testing over the core's own plugins.

- ``MemoryStorage`` (the kit's in-memory target) passes ``StorageContract``;
- the built-in ``image`` provider passes ``ProviderContract``, and the built-in
  verifiers pass ``VerifierContract``: the classes are those the built-in
  plugins declare as self-checks (genievm_core/builtin/checks.py), run here too.

The filesystem and S3 targets, the ``kvm`` provider and its CBT source, and the
example plugin in docs/examples run the same suites in their own tests.
"""

from __future__ import annotations

import pytest

from genievm_core.builtin.checks import TestChunksVerifier, TestDataVerifier, TestImageProvider, TestManifestVerifier
from genievm_core.plugin.protocols import StorageTarget
from genievm_core.testing import MemoryStorage, StorageContract

__all__ = ["TestChunksVerifier", "TestDataVerifier", "TestImageProvider", "TestManifestVerifier"]


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self) -> StorageTarget:
        return MemoryStorage()
