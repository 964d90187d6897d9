"""The contract self-checks of the built-in plugins (``genievm plugins --check``; tests/test_contracts.py).

- ``TestImageProvider``: ``ProviderContract`` over the ``image`` provider, on
  sparse images made in a temporary folder;
- ``TestManifestVerifier``, ``TestChunksVerifier``, ``TestDataVerifier``:
  ``VerifierContract`` over the built-in verifiers, each with the damage it finds.

Imported only by pytest: it needs pytest, which the CLI does not.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from genievm_core.builtin.verifiers import ChunksVerifier, DataVerifier, ManifestVerifier
from genievm_core.jobs import RestoreResult
from genievm_core.plugin.protocols import Verifier
from genievm_core.testing import ProviderContract, VerifierContract

__all__ = ["TestChunksVerifier", "TestDataVerifier", "TestImageProvider", "TestManifestVerifier"]

CHUNK = 65536


def _image(path: Path, size: int, layout: list[tuple[int, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in layout:
            f.seek(offset)
            f.write(data)
    return path


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


class TestImageProvider(ProviderContract):
    provider_name = "image"

    @pytest.fixture
    def disks(self, tmp_path: Path) -> dict[str, Path]:
        rng = random.Random(1)
        vda = _image(tmp_path / "vm" / "vda.img", 8 * CHUNK, [(0, rng.randbytes(CHUNK)), (5 * CHUNK, b"x")])
        vdb = _image(tmp_path / "vm" / "vdb.img", 3 * CHUNK + 1000, [(CHUNK, rng.randbytes(2 * CHUNK))])
        return {"vda": vda, "vdb": vdb}

    @pytest.fixture
    def provider_options(self, disks: dict[str, Path]) -> dict[str, Any]:
        return {"vms": {"web01": {name: str(path) for name, path in disks.items()}}}

    @pytest.fixture
    def vm_id(self) -> str:
        return "web01"

    @pytest.fixture
    def mutate_disk(self, disks: dict[str, Path]) -> Callable[[str, int, int, int], None]:
        return lambda disk, offset, length, pattern: _patch(disks[disk], offset, bytes([pattern]) * length)

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
