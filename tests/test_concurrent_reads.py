"""A disk source that ``ReadsConcurrently`` is read on the engine's workers, several reads at once; any other
source is read on the disk's one thread, in ascending order. Both store the same chunks."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from genievm_core.builtin.image import ImageDiskSource
from genievm_core.engine import BackupEngine, DiskPlan
from genievm_core.models.extents import Extent
from genievm_core.models.manifest import CBTRecord
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import ReadsConcurrently
from genievm_core.repository import ChunkIndex, Repository
from genievm_core.repository.storage import open_storage

CHUNK = 65536


class WatchedImageSource(ImageDiskSource):
    """A real image file whose reads are recorded: by which thread, where, and how many were under way at once."""

    def __init__(self, info: DiskInfo, *, concurrent: bool) -> None:
        super().__init__(info)
        self.concurrent_reads = concurrent
        self.reads: list[tuple[str, int]] = []
        self.most_at_once = 0
        self._now = 0
        self._lock = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            self._now += 1
            self.most_at_once = max(self.most_at_once, self._now)
            self.reads.append((threading.current_thread().name, offset))
        try:
            time.sleep(0.005)  # a read that takes a while, as one from a disk does
            return super().read(offset, length)
        finally:
            with self._lock:
                self._now -= 1


def _backup(tmp_path: Path, name: str, source: WatchedImageSource) -> tuple[Repository, ChunkIndex]:
    repo = Repository.init(open_storage(PluginHost(), str(tmp_path / name)), passphrase=None, chunk_size=CHUNK)
    with ThreadPoolExecutor(4, thread_name_prefix="worker") as pool:
        engine = BackupEngine(repo, pool, known_ids=set(), window=6)
        index, _stats = engine.backup_disk(source, DiskPlan(CBTRecord(mode="full")))
    repo.flush_chunks()
    return repo, index


def test_a_source_that_reads_concurrently_is_read_on_the_workers(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    data = os.urandom(24 * CHUNK + 1000)
    image.write_bytes(data)
    info = DiskInfo("vda", len(data), "raw-file", location=str(image))
    concurrent, serial = WatchedImageSource(info, concurrent=True), WatchedImageSource(info, concurrent=False)
    assert isinstance(concurrent, ReadsConcurrently) and ImageDiskSource.concurrent_reads is True

    repo, index = _backup(tmp_path, "a", concurrent)
    _, serial_index = _backup(tmp_path, "b", serial)

    assert {name.split("_")[0] for name, _ in concurrent.reads} == {"worker"}
    assert concurrent.most_at_once >= 2
    assert sorted(offset for _, offset in concurrent.reads) == [i * CHUNK for i in range(25)]
    assert {name for name, _ in serial.reads} == {threading.current_thread().name}
    assert serial.most_at_once == 1
    assert [offset for _, offset in serial.reads] == [i * CHUNK for i in range(25)]
    assert list(index) == list(serial_index)  # the same chunks, in the same places
    assert b"".join(repo.get_chunk(cid) for cid in index) == data


def test_the_changed_parts_merged_into_the_parents_chunks_are_read_on_the_workers(tmp_path: Path) -> None:
    """An incremental with changed extents: each chunk changed in a small part is read there by a worker
    (a source that reads concurrently) and merged into its parent's chunk; the chunks are the disk's."""
    image = tmp_path / "disk.img"
    data = bytearray(os.urandom(24 * CHUNK))
    image.write_bytes(data)
    info = DiskInfo("vda", len(data), "raw-file", location=str(image))
    repo, parent = _backup(tmp_path, "a", WatchedImageSource(info, concurrent=True))
    changed = [Extent(i * CHUNK + 4096, 512) for i in range(0, 24, 2)]  # 12 chunks, 512 bytes each
    with image.open("r+b") as f:
        for extent in changed:
            data[extent.offset : extent.end] = os.urandom(extent.length)
            f.seek(extent.offset)
            f.write(data[extent.offset : extent.end])
    source = WatchedImageSource(info, concurrent=True)
    with ThreadPoolExecutor(4, thread_name_prefix="worker") as pool:
        engine = BackupEngine(repo, pool, known_ids=set(parent), window=6)
        index, stats = engine.backup_disk(source, DiskPlan(CBTRecord(mode="cbt"), parent, changed))
    repo.flush_chunks()

    assert sorted(offset for _, offset in source.reads) == [e.offset for e in changed]  # only the changed parts
    assert {name.split("_")[0] for name, _ in source.reads} == {"worker"} and source.most_at_once >= 2
    assert (stats.bytes_read, stats.chunks_new) == (12 * 512, 12)
    assert b"".join(repo.get_chunk(cid) for cid in index) == bytes(data)
