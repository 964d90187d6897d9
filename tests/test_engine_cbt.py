"""The engine's CBT path: only chunks touched by changed extents are read; the rest come from the parent.

No provider of the core has CBT, so the disk source here is a test double that reports the
extents the test itself wrote (``RecordedChangesSourceDouble``); the data is a real file.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from genievm_core.builtin.image import ImageDiskSource
from genievm_core.engine import BackupEngine, DiskPlan
from genievm_core.models.extents import Extent
from genievm_core.models.manifest import CBTRecord
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import ChangedExtents
from genievm_core.repository import ZERO_ID, Repository
from genievm_core.repository.storage import open_storage

CHUNK = 65536


class RecordedChangesSourceDouble(ImageDiskSource):
    """A real image file, with changed extents given by the test instead of a CBT source."""

    def __init__(self, info: DiskInfo, changed: list[Extent]) -> None:
        super().__init__(info)
        self.changed = changed
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return super().read(offset, length)

    def changed_extents(self, token: str | None) -> ChangedExtents:
        return ChangedExtents(self.changed, source="recorded")


def _backup(repo: Repository, source: ImageDiskSource, plan: DiskPlan):  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(2) as pool:
        result = BackupEngine(repo, pool, known_ids=set()).backup_disk(source, plan)
    repo.flush_chunks()  # as the commit does before the index that names the chunks
    return result


def test_cbt_reads_only_changed_chunks_and_keeps_the_rest(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(10 * CHUNK + 123))
    repo = Repository.init(open_storage(PluginHost(), str(tmp_path / "repo")), passphrase=None, chunk_size=CHUNK)
    info = DiskInfo("vda", image.stat().st_size, "raw-file", location=str(image))
    parent, _ = _backup(repo, ImageDiskSource(info), DiskPlan(CBTRecord(mode="full")))

    size = info.size
    with open(image, "r+b") as f:  # change chunk 2 (partly), zero chunk 5, make chunks 9 and 10 a hole
        f.seek(2 * CHUNK + 100)
        f.write(b"x" * 10)
        f.seek(5 * CHUNK)
        f.write(bytes(CHUNK))
        f.truncate(9 * CHUNK)
        f.truncate(size)
    changed = [Extent(2 * CHUNK + 100, 10), Extent(5 * CHUNK, CHUNK), Extent(9 * CHUNK, size - 9 * CHUNK)]
    source = RecordedChangesSourceDouble(info, changed)
    index, stats = _backup(repo, source, DiskPlan(CBTRecord(mode="cbt"), parent, changed))

    assert {offset // CHUNK for offset, _ in source.reads} == {2, 5}  # holes 9 and 10 are not read
    assert stats.chunks_unchanged == index.count - 4
    assert index[5] == index[9] == index[10] == ZERO_ID
    assert ZERO_ID not in (parent[5], parent[9], parent[10])
    assert index[2] != parent[2]
    assert [index[i] for i in (0, 1, 3, 4, 6, 7, 8)] == [parent[i] for i in (0, 1, 3, 4, 6, 7, 8)]
    data = image.read_bytes()
    for i in range(index.count):
        expected = data[i * CHUNK : (i + 1) * CHUNK]
        got = bytes(len(expected)) if index[i] == ZERO_ID else repo.get_chunk(index[i])
        assert got == expected, f"chunk {i}"
