"""The contract self-check of the filesystem target: ``StorageContract`` in a temporary folder.

``genievm plugins --check`` runs it; tests/test_fs_storage.py runs it too, with its own checks on top.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genievm_core.testing import StorageContract
from genievm_storage_fs.storage import FilesystemStorage

__all__ = ["TestFilesystemStorageContract"]


class TestFilesystemStorageContract(StorageContract):
    """The storage contract of genievm_core.testing; no put leaves a temporary file behind."""

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[FilesystemStorage]:
        target = FilesystemStorage(tmp_path / "repo")
        yield target
        target.close()
        assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []
