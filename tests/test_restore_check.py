"""Verify-after-restore reads the written disk back and names every chunk that differs.

A real disk does not corrupt data on demand, so the sink here is a test double
(``CorruptingSinkDouble``): a real sparse file whose writes to one chunk are damaged.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support import backup_vm, random_bytes, write_image

from genievm_core.builtin.image import ImageDiskSink
from genievm_core.engine import RestoreEngine
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository

CHUNK = 65536


class CorruptingSinkDouble(ImageDiskSink):
    def __init__(self, path: Path, size: int, bad_chunk: int) -> None:
        super().__init__(path, size)
        self.bad_chunk = bad_chunk

    def write(self, offset: int, data: bytes) -> None:
        if offset // CHUNK == self.bad_chunk:
            data = bytes([data[0] ^ 1]) + data[1:]
        super().write(offset, data)


def test_compare_names_the_damaged_chunk_only(tmp_path: Path, host: PluginHost, new_repo) -> None:  # type: ignore[no-untyped-def]
    repo, _ = new_repo()
    assert isinstance(repo, Repository) and repo.chunk_size == CHUNK
    size = 6 * CHUNK + 500
    image = write_image(
        tmp_path / "vda.img", size, [(0, random_bytes(2 * CHUNK, 1)), (4 * CHUNK, random_bytes(2 * CHUNK + 500, 2))]
    )
    manifest = backup_vm(host, repo, "vm1", {"vda": image})
    index = repo.get_index(manifest.disks[0].index)
    with ThreadPoolExecutor(2) as pool:
        engine = RestoreEngine(repo, pool)
        good = ImageDiskSink(tmp_path / "good.img", size)
        engine.restore_disk("vda", index, good)
        assert engine.compare("vda", index, good) == []
        bad = CorruptingSinkDouble(tmp_path / "bad.img", size, bad_chunk=4)
        engine.restore_disk("vda", index, bad)
        problems = engine.compare("vda", index, bad)
    assert [(p.disk, p.chunk_index) for p in problems] == [("vda", 4)]
