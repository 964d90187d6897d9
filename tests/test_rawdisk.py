"""The raw disk writer of restores: direct where the file system allows it, the same bytes either way.

Real files on the test folder's file system (a real 1 MiB tmpfs for a full device, a real
loop device for a restore onto a block device); every written disk is compared with a
model of what was written.
"""

from __future__ import annotations

import errno
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import CHUNK, RepoFactory, backup_vm, random_bytes, restore_vm, write_image

from genievm_core.engine.rawdisk import DIRECT_ALIGN, RawDiskWriter
from genievm_core.models.config import DiskConfig
from genievm_core.plugin import PluginHost
from genievm_core.testing.tmpfs import mounted_tmpfs

MIB = 1 << 20


def direct_io_allowed(folder: Path) -> bool:
    probe = folder / "probe"
    probe.touch()
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_DIRECT))
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def open_disk(path: Path, size: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(fd, size)
    return fd


# (offset, length): aligned whole chunks, a short aligned piece, unaligned starts and ends,
# a tail that is not a multiple of DIRECT_ALIGN, and rewrites of ranges written before
WRITES = [(0, MIB), (3 * MIB, MIB), (MIB, 64 << 10), (2 * MIB + 100, 5000), (5 * MIB - 777, 777), (0, 8192)]
WRITES += [(4 * MIB, 4096), (MIB + 4096, 3 * 4096), (2 * MIB, MIB)]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_written_bytes_are_what_was_written(tmp_path: Path, direct: bool) -> None:
    size = 5 * MIB
    path = tmp_path / "disk.img"
    fd = open_disk(path, size)
    model = bytearray(size)
    writer = RawDiskWriter(fd, path, direct=direct, depth=2)
    assert writer.direct == (direct and direct_io_allowed(tmp_path))
    for n, (offset, length) in enumerate(WRITES):
        data = random_bytes(length, n)
        writer.write(offset, data)
        model[offset : offset + length] = data
    writer.sync()
    writer.close()
    os.close(fd)
    assert path.stat().st_size == size
    assert path.read_bytes() == bytes(model)


def test_reads_from_several_threads_see_every_queued_write(tmp_path: Path) -> None:
    chunk, count = 256 << 10, 32
    path = tmp_path / "disk.img"
    fd = open_disk(path, chunk * count)
    writer = RawDiskWriter(fd, path, depth=8)
    chunks = [random_bytes(chunk, i) for i in range(count)]
    for i, data in enumerate(chunks):
        writer.write(i * chunk, data)
    with ThreadPoolExecutor(4) as pool:  # as verify-after-restore reads, right after the last write
        read = list(pool.map(lambda i: writer.read(i * chunk, chunk), range(count)))
    assert read == chunks
    writer.close()
    os.close(fd)


def test_a_full_device_fails_a_later_write_or_the_sync(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "tiny", "size=1m") as folder:
        path = folder / "disk.img"
        fd = open_disk(path, 4 * MIB)
        writer = RawDiskWriter(fd, path, depth=2)
        with pytest.raises(OSError) as caught:
            for i in range(16):
                writer.write(i * (DIRECT_ALIGN * 64), random_bytes(DIRECT_ALIGN * 64, i))  # 4 MiB in all
            writer.sync()
        assert caught.value.errno == errno.ENOSPC
        writer.close()
        os.close(fd)


def test_a_restore_onto_a_block_device_writes_every_chunk_zeros_included(
    host: PluginHost, new_repo: RepoFactory, tmp_path: Path
) -> None:
    size = 24 * CHUNK + 4096  # a loop device's size is a multiple of 512: the last chunk is short but aligned
    image = write_image(tmp_path / "vda.img", size, [(CHUNK, random_bytes(3 * CHUNK, 1)), (size - 4096, b"end")])
    repo, _ = new_repo(encrypted=True)
    backup_vm(host, repo, "vm1", {"vda": image})
    backing = tmp_path / "device.img"
    backing.write_bytes(random_bytes(size, 2))  # a device is not zeroed: the restore must write the zero chunks too
    attach = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if attach.returncode != 0:
        pytest.skip(f"cannot attach a loop device here (needs root): {attach.stderr.strip()}")
    device = Path(attach.stdout.strip())
    try:
        restore_vm(
            host, repo, "vm1", tmp_path / "out", disk_configs=(DiskConfig(name="vda", target=str(device)),), force=True
        )
        with open(device, "rb") as f:
            assert f.read() == image.read_bytes()
    finally:
        subprocess.run(["losetup", "--detach", str(device)], check=True)
    assert backing.read_bytes() == image.read_bytes()
