"""The disk-source helpers providers build on (genievm_core.engine.sources), over a real file."""

from __future__ import annotations

from pathlib import Path

import pytest

from genievm_core.engine import CountingDiskSource, DiskSources
from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import ChangedExtents, DiskSource


class FileDiskSource(CountingDiskSource):
    def __init__(self, path: Path) -> None:
        self.file = path.open("rb")
        info = DiskInfo(path.name, path.stat().st_size, "raw-file", location=str(path))
        super().__init__(info, self._pread, self.file.close)

    def _pread(self, offset: int, length: int) -> bytes:
        self.file.seek(offset)
        return self.file.read(length)

    def allocated_extents(self) -> list[Extent] | None:
        return None

    def changed_extents(self, token: str | None) -> ChangedExtents:
        return ChangedExtents.unavailable("a plain file")

    def next_token(self) -> str | None:
        return None


def test_reads_are_counted_and_closing_the_session_closes_every_source(tmp_path: Path) -> None:
    for name in ("vda", "vdb"):
        (tmp_path / name).write_bytes(bytes(range(256)) * 16)
    session = DiskSources({"vda": FileDiskSource(tmp_path / "vda")})
    session.add("vdb", FileDiskSource(tmp_path / "vdb"))
    vda = session.sources()["vda"]
    assert isinstance(vda, DiskSource) and isinstance(vda, FileDiskSource)
    assert vda.read(256, 4) == bytes([0, 1, 2, 3]) and vda.read(1, 2) == bytes([1, 2])
    assert vda.bytes_read == 6 and vda.info.size == 4096
    session.close()
    assert [s.file.closed for s in session.sources().values() if isinstance(s, FileDiskSource)] == [True, True]


def test_a_source_without_the_provider_part_cannot_be_made() -> None:
    class Incomplete(CountingDiskSource):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(DiskInfo("vda", 0, "raw-file"), lambda offset, length: b"", lambda: None)  # type: ignore[abstract]
