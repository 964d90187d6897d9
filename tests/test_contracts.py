"""The contract suites of genievm_core.testing over the core's own plugins.

- ``MemoryStorage`` (the kit's in-memory target) passes ``StorageContract``;
- the built-in ``image`` provider passes ``ProviderContract``;
- the built-in verifiers pass ``VerifierContract``, each finding its kinds of damage.

The filesystem and S3 targets, the ``kvm`` provider and its CBT source, and the
example plugin in docs/examples run the same suites in their own tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import patch_image, random_bytes, write_image

from genievm_core.builtin.verifiers import ChunksVerifier, DataVerifier, ManifestVerifier
from genievm_core.jobs import RestoreResult
from genievm_core.plugin.protocols import StorageTarget, Verifier
from genievm_core.testing import MemoryStorage, ProviderContract, StorageContract, VerifierContract

CHUNK = 65536


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self) -> StorageTarget:
        return MemoryStorage()


class TestImageProvider(ProviderContract):
    provider_name = "image"

    @pytest.fixture
    def disks(self, tmp_path: Path) -> dict[str, Path]:
        vda = write_image(tmp_path / "vm" / "vda.img", 8 * CHUNK, [(0, random_bytes(CHUNK, 1)), (5 * CHUNK, b"x")])
        vdb = write_image(tmp_path / "vm" / "vdb.img", 3 * CHUNK + 1000, [(CHUNK, random_bytes(2 * CHUNK, 2))])
        return {"vda": vda, "vdb": vdb}

    @pytest.fixture
    def provider_options(self, disks: dict[str, Path]) -> dict[str, Any]:
        return {"vms": {"web01": {name: str(path) for name, path in disks.items()}}}

    @pytest.fixture
    def vm_id(self) -> str:
        return "web01"

    @pytest.fixture
    def mutate_disk(self, disks: dict[str, Path]) -> Callable[[str, int, int, int], None]:
        return lambda disk, offset, length, pattern: patch_image(disks[disk], [(offset, bytes([pattern]) * length)])

    @pytest.fixture
    def read_restored(self, restore_config: dict[str, Any]) -> Callable[[RestoreResult, str], bytes]:
        return lambda result, disk: (restore_config["restore_path"] / f"{disk}.img").read_bytes()


class TestManifestVerifier(VerifierContract):
    detects = ("corrupt-index",)

    @pytest.fixture
    def verifier(self) -> Verifier:
        return ManifestVerifier()


class TestChunksVerifier(VerifierContract):
    detects = ("missing-chunk", "corrupt-index")

    @pytest.fixture
    def verifier(self) -> Verifier:
        return ChunksVerifier()


class TestDataVerifier(VerifierContract):
    detects = ("missing-chunk", "corrupt-chunk", "corrupt-index")

    @pytest.fixture
    def verifier(self) -> Verifier:
        return DataVerifier(workers=2)
