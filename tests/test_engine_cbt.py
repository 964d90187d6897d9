"""The engine's CBT path: only chunks touched by changed extents are read; the rest come from the parent.

No provider of the core has CBT, so the disk source here is a test double that reports the
extents the test itself wrote (``RecordedChangesSourceDouble``); the data is a real file.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

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


def test_a_small_change_is_read_alone_and_merged_into_the_parents_chunk(tmp_path: Path) -> None:
    """A chunk changed in a few bytes is read only there; the stored chunk is the disk's chunk exactly."""
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(6 * CHUNK))
    repo = Repository.init(open_storage(PluginHost(), str(tmp_path / "repo")), passphrase="pw", chunk_size=CHUNK)
    info = DiskInfo("vda", image.stat().st_size, "raw-file", location=str(image))
    parent, _ = _backup(repo, ImageDiskSource(info), DiskPlan(CBTRecord(mode="full")))

    with open(image, "r+b") as f:  # chunk 1: two small writes; chunk 3: most of it; chunk 4: a small hole punched
        for offset, data in ((CHUNK + 7, b"a" * 100), (CHUNK + 5000, b"b" * 3000), (3 * CHUNK + 10, b"c" * 60000)):
            f.seek(offset)
            f.write(data)
    hole = ["fallocate", "--punch-hole", "--offset", str(4 * CHUNK + 4096), "--length", "8192", str(image)]
    subprocess.run(hole, check=True)
    changed = [Extent(CHUNK + 7, 100), Extent(CHUNK + 5000, 3000), Extent(3 * CHUNK + 10, 60000)]
    changed.append(Extent(4 * CHUNK + 4096, 8192))  # reads as zeros now, inside an allocated chunk
    source = RecordedChangesSourceDouble(info, changed)
    index, stats = _backup(repo, source, DiskPlan(CBTRecord(mode="cbt"), parent, changed))

    assert sorted(source.reads) == [(CHUNK + 7, 100), (CHUNK + 5000, 3000), (3 * CHUNK, CHUNK)]  # 4: in a hole
    assert stats.bytes_read == 100 + 3000 + CHUNK
    data = image.read_bytes()
    with ThreadPoolExecutor(2) as pool:
        full, _ = BackupEngine(repo, pool, known_ids=set()).backup_disk(
            ImageDiskSource(info), DiskPlan(CBTRecord(mode="full"))
        )
    assert [index[i] for i in range(index.count)] == [full[i] for i in range(full.count)]
    for i in (1, 3, 4):
        assert index[i] != parent[i]
        assert repo.get_chunk(index[i]) == data[i * CHUNK : (i + 1) * CHUNK], f"chunk {i}"


@pytest.mark.parametrize("damage", ["gone", "one byte changed"])
def test_a_small_change_over_a_damaged_parent_chunk_is_read_whole_and_the_backup_goes_on(
    tmp_path: Path, damage: str
) -> None:
    """The parent's chunk a small change would be merged into is gone, or its tag fails (the merge trusts an
    encrypted chunk's tag, as a restore does): that chunk is read whole from the disk instead (a warning), and
    the incremental stores the disk's chunk exactly, as a full backup would."""
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(3 * CHUNK))
    repo = Repository.init(open_storage(PluginHost(), str(tmp_path / "repo")), passphrase="pw", chunk_size=CHUNK)
    info = DiskInfo("vda", image.stat().st_size, "raw-file", location=str(image))
    parent, _ = _backup(repo, ImageDiskSource(info), DiskPlan(CBTRecord(mode="full")))
    stored = tmp_path / "repo" / Repository.chunk_key(parent[1])
    if damage == "gone":
        stored.unlink()
    else:
        blob = bytearray(stored.read_bytes())
        blob[len(blob) // 2] ^= 1
        stored.write_bytes(blob)
    with open(image, "r+b") as f:
        f.seek(CHUNK + 7)
        f.write(b"a" * 100)
    changed = [Extent(CHUNK + 7, 100)]
    source = RecordedChangesSourceDouble(info, changed)
    index, stats = _backup(repo, source, DiskPlan(CBTRecord(mode="cbt"), parent, changed))

    assert sorted(source.reads) == [(CHUNK, CHUNK), (CHUNK + 7, 100)]  # the change, then the whole chunk
    assert stats.bytes_read == 100 + CHUNK
    assert repo.get_chunk(index[1]) == image.read_bytes()[CHUNK : 2 * CHUNK]
    assert (index[0], index[2]) == (parent[0], parent[2])
