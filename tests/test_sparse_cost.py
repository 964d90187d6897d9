"""A sparse disk costs what it holds: the engine does per-chunk work only for chunks with data (or changes).

A 2 TiB image with 3 data chunks is backed up in 4 MiB chunks (524,288 of them): full, hash-compare
incremental and CBT incremental. The progress callback, called once per chunk examined, is the measure
of per-chunk work; the statistics and indexes must be exactly those of a chunk-by-chunk walk.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from genievm_core.builtin.image import ImageDiskSource
from genievm_core.engine import BackupEngine, DiskPlan, DiskProgress
from genievm_core.models.extents import Extent
from genievm_core.models.manifest import BackupStats, CBTRecord
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin import PluginHost
from genievm_core.repository import ZERO_ID, ChunkIndex, Repository
from genievm_core.repository.storage import open_storage

CHUNK = 4 << 20
SIZE = 2 << 40
DATA_AT = [0, 700_000 * CHUNK // 2, SIZE - CHUNK]  # first, somewhere, last chunk


def _backup(repo: Repository, source: ImageDiskSource, plan: DiskPlan) -> tuple[ChunkIndex, BackupStats, int]:
    calls: list[DiskProgress] = []
    with ThreadPoolExecutor(2) as pool:
        engine = BackupEngine(repo, pool, known_ids=set(), progress=calls.append)
        index, stats = engine.backup_disk(source, plan)
    repo.flush_chunks()  # as the commit does before the index
    assert calls[-1].done and calls[-1].scanned == calls[-1].total
    return index, stats, len(calls)


def test_a_2_tib_sparse_disk_is_walked_by_its_data(tmp_path: Path) -> None:
    image = tmp_path / "sparse.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
        for n, at in enumerate(DATA_AT):
            f.seek(at)
            f.write(os.urandom(CHUNK - n))  # the last bytes of chunks 1 and 2 stay zero
    repo = Repository.init(open_storage(PluginHost(), str(tmp_path / "repo")), passphrase=None, chunk_size=CHUNK)
    info = DiskInfo("vda", SIZE, "raw-file", location=str(image))
    count = SIZE // CHUNK
    full, stats, calls = _backup(repo, ImageDiskSource(info), DiskPlan(CBTRecord(mode="full")))
    assert calls < 20, f"{calls} progress reports for 3 chunks of data"
    assert [i for i, _ in full.stored_entries()] == [at // CHUNK for at in DATA_AT]
    assert (stats.chunks_new, stats.chunks_zero, stats.bytes_zero) == (3, count - 3, SIZE - 3 * CHUNK)
    assert stats.bytes_scanned == SIZE and stats.bytes_read == 3 * CHUNK

    with open(image, "r+b") as f:  # one chunk of data changes
        f.seek(DATA_AT[1])
        f.write(b"changed")
    again, stats, calls = _backup(repo, ImageDiskSource(info), DiskPlan(CBTRecord(mode="hash-compare"), full))
    assert calls < 20
    assert (stats.chunks_new, stats.chunks_deduplicated, stats.chunks_zero) == (1, 2, count - 3)
    assert again[0] == full[0] and again[count - 1] == full[count - 1] and again[DATA_AT[1] // CHUNK] != full[1]

    changed = [Extent(DATA_AT[1], 7)]
    cbt, stats, calls = _backup(repo, ImageDiskSource(info), DiskPlan(CBTRecord(mode="cbt"), full, changed))
    assert calls < 20
    assert cbt.entries == again.entries and stats.chunks_unchanged == count - 1 and stats.chunks_new == 0


def test_stored_entries_and_take_from_match_an_entry_by_entry_walk() -> None:
    index = ChunkIndex.empty(10_000 * 4096 + 5, 4096)
    for i in (0, 4095, 4096, 8191, 10_000):
        index[i] = bytes([i % 251 + 1]) * 32
    walked = [(i, index[i]) for i in range(index.count) if index[i] != ZERO_ID]
    assert list(index.stored_entries()) == walked and index.stored_ids() == {cid for _, cid in walked}
    grown = ChunkIndex.empty(index.disk_size + 4096, 4096)  # the parent's last chunk was short: not taken
    grown.take_from(index)
    assert [(i, grown[i]) for i in range(grown.count) if grown[i] != ZERO_ID] == walked[:-1]
    same = ChunkIndex.empty(index.disk_size, 4096)
    same.take_from(index)
    assert same.entries == index.entries
