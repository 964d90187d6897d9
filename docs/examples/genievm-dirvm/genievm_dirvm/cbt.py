"""``dirvm-blockhash``: changed blocks found by comparing them with the hashes of the last backup.

Each backup stores a *block map* of its disk: the BLAKE2 hash of every 64 KiB
block, in ``<folder>/.dirvm-cbt/<vm>/<disk>/<token>.map``; its token is the
map's name. The next backup hashes the disk again and reports the blocks whose
hash differs. This reads the whole disk, but the engine then reads, compresses
and stores only the changed blocks. A map that is missing or of another size
makes changes "not available": the engine falls back to comparing chunk ids.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from genievm_core.models.extents import Extent, clip, normalize
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import ChangedExtents

from genievm_dirvm.vms import SAFE

__all__ = ["BLOCK", "BlockHashCBT", "block_hashes", "map_folder", "write_map"]

BLOCK = 65536
DIGEST = 16
HEADER = 8  # the disk's size, big-endian


def map_folder(disk: DiskInfo) -> Path:
    return Path(disk.details["dirvm_root"]) / ".dirvm-cbt" / disk.details["dirvm_vm"] / disk.name


def block_hashes(read: Callable[[int, int], bytes], size: int) -> Iterator[bytes]:
    for offset in range(0, size, BLOCK):
        yield hashlib.blake2b(read(offset, min(BLOCK, size - offset)), digest_size=DIGEST).digest()


def write_map(disk: DiskInfo, token: str, read: Callable[[int, int], bytes]) -> Path:
    """Hash the disk and store its block map under ``token`` (atomically)."""
    folder = map_folder(disk)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{token}.map"
    tmp = folder / f".{token}.tmp"
    with open(tmp, "wb") as f:
        f.write(disk.size.to_bytes(HEADER, "big"))
        for digest in block_hashes(read, disk.size):
            f.write(digest)
    os.replace(tmp, path)
    return path


# [guide:cbt]
class BlockHashCBT:
    name = "dirvm-blockhash"
    priority = 10  # higher is tried first; there is no other source for these disks

    def supports(self, disk: DiskInfo) -> bool:
        return disk.storage_kind == "raw-file" and "dirvm_root" in disk.details

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        if not token:
            return ChangedExtents.unavailable("no block map to compare with (first backup)")
        path = map_folder(disk) / f"{token}.map"
        if not SAFE.match(token) or not path.is_file():
            # a token we cannot honour: "not available", never a guess
            return ChangedExtents.unavailable(f"block map {token} is gone")
        stored = path.read_bytes()
        if int.from_bytes(stored[:HEADER], "big") != disk.size:
            return ChangedExtents.unavailable("the disk's size changed since the last backup")
        changed = []
        with open(disk.location, "rb") as f:
            current = block_hashes(lambda offset, length: os.pread(f.fileno(), length, offset), disk.size)
            for i, digest in enumerate(current):
                if stored[HEADER + i * DIGEST : HEADER + (i + 1) * DIGEST] != digest:
                    changed.append(Extent(i * BLOCK, BLOCK))
        return ChangedExtents(clip(normalize(changed), disk.size), self.name)


# [/guide:cbt]
