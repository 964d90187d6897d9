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
        return {cid for cid in self if cid != ZERO_ID}

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
