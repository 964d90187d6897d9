"""The binary chunk index of one disk in one backup.

Layout (little-endian), stored inside an object envelope::

    magic "GVMI" | version u8 = 1 | 3 reserved zero bytes
    chunk_size u64 | disk_size u64 | chunk_count u64
    chunk_count entries of 32 bytes: the chunk id, or 32 zero bytes for an all-zero chunk

Entry i covers disk bytes ``[i * chunk_size, min((i + 1) * chunk_size, disk_size))``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import blake3

from genievm_core.repository.objects import ZERO_ID, ObjectDamaged

__all__ = ["ChunkIndex", "chunk_count"]

_HEADER = struct.Struct("<4sB3xQQQ")
_MAGIC = b"GVMI"
ENTRY = 32
_SCAN_BLOCK = 4096  # entries looked at together when skipping zero runs (128 KiB)


def chunk_count(disk_size: int, chunk_size: int) -> int:
    return -(-disk_size // chunk_size)


@dataclass
class ChunkIndex:
    chunk_size: int
    disk_size: int
    entries: bytearray  # chunk_count * 32 bytes

    @classmethod
    def empty(cls, disk_size: int, chunk_size: int) -> ChunkIndex:
        return cls(chunk_size, disk_size, bytearray(chunk_count(disk_size, chunk_size) * ENTRY))

    @property
    def count(self) -> int:
        return len(self.entries) // ENTRY

    def __getitem__(self, i: int) -> bytes:
        return bytes(self.entries[i * ENTRY : (i + 1) * ENTRY])

    def __setitem__(self, i: int, chunk_id: bytes) -> None:
        self.entries[i * ENTRY : (i + 1) * ENTRY] = chunk_id

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(self.count))

    def chunk_length(self, i: int) -> int:
        return min(self.chunk_size, self.disk_size - i * self.chunk_size)

    def stored_ids(self) -> set[bytes]:
        return {cid for _i, cid in self.stored_entries()}

    def stored_entries(self) -> Iterator[tuple[int, bytes]]:
        """``(i, chunk id)`` of every entry that is not a zero chunk, in order.

        Runs of zero entries are skipped a block at a time, so a sparse disk costs
        what it holds, not its size (a 2 TiB disk has 524,288 entries of 4 MiB).
        """
        entries, step = self.entries, _SCAN_BLOCK * ENTRY
        for start in range(0, len(entries), step):
            block = entries[start : start + step]
            if block.count(0) == len(block):
                continue
            for at in range(0, len(block), ENTRY):
                cid = bytes(block[at : at + ENTRY])
                if cid != ZERO_ID:
                    yield (start + at) // ENTRY, cid

    def take_from(self, parent: ChunkIndex) -> None:
        """Copy ``parent``'s entries for every chunk both cover with the same length (one slice, not a loop)."""
        n = min(self.count, parent.count)
        if n and self.chunk_length(n - 1) != parent.chunk_length(n - 1):
            n -= 1  # only the last chunk both have can differ in length
        self.entries[: n * ENTRY] = parent.entries[: n * ENTRY]

    def checksum(self) -> str:
        """Hex BLAKE3 of the entries: the disk's checksum recorded in the manifest."""
        return blake3.blake3(bytes(self.entries)).hexdigest()

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_MAGIC, 1, self.chunk_size, self.disk_size, self.count) + bytes(self.entries)

    @classmethod
    def from_bytes(cls, data: bytes) -> ChunkIndex:
        if len(data) < _HEADER.size:
            raise ObjectDamaged("index truncated")
        magic, version, chunk_size, disk_size, count = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != 1:
            raise ObjectDamaged("not a version 1 chunk index")
        if chunk_size <= 0 or count != chunk_count(disk_size, chunk_size):
            raise ObjectDamaged(f"index of {count} chunks does not fit a disk of {disk_size} bytes")
        if len(data) != _HEADER.size + count * ENTRY:
            raise ObjectDamaged(f"index length {len(data)} does not hold {count} entries")
        return cls(chunk_size, disk_size, bytearray(data[_HEADER.size :]))
