"""The binary chunk index of one disk in one backup.

Layout (little-endian), stored inside an object envelope::

    magic "GVMI" | version u8 = 1 or 2 | 3 reserved zero bytes
    chunk_size u64 | disk_size u64 | chunk_count u64
    chunk_count entries of 32 bytes: the chunk id, or 32 zero bytes for an all-zero chunk
    version 2 only: patch_count u64, then patch_count records, ascending by entry:
        entry u64 | base id (32) | patch id (32)

Entry i covers disk bytes ``[i * chunk_size, min((i + 1) * chunk_size, disk_size))``. A patched
entry (version 2, ``genievm_core.repository.patches``) is not stored under its id: its content is
the base chunk with the patch chunk written over it. An index without patched entries is written
as version 1, which every GenieVM reads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import blake3

from genievm_core.repository.objects import ZERO_ID, ObjectDamaged
from genievm_core.repository.patches import PatchRef

__all__ = ["ChunkIndex", "chunk_count"]

_HEADER = struct.Struct("<4sB3xQQQ")
_MAGIC = b"GVMI"
ENTRY = 32
_COUNT = struct.Struct("<Q")
_PATCH = struct.Struct("<Q32s32s")
_SCAN_BLOCK = 4096  # entries looked at together when skipping zero runs (128 KiB)


def chunk_count(disk_size: int, chunk_size: int) -> int:
    return -(-disk_size // chunk_size)


@dataclass
class ChunkIndex:
    chunk_size: int
    disk_size: int
    entries: bytearray  # chunk_count * 32 bytes
    patches: dict[int, PatchRef] = field(default_factory=dict)  # the patched entries, by entry number

    @classmethod
    def empty(cls, disk_size: int, chunk_size: int) -> ChunkIndex:
        return cls(chunk_size, disk_size, bytearray(chunk_count(disk_size, chunk_size) * ENTRY))

    @property
    def count(self) -> int:
        return len(self.entries) // ENTRY

    def __getitem__(self, i: int) -> bytes:
        return bytes(self.entries[i * ENTRY : (i + 1) * ENTRY])

    def __setitem__(self, i: int, chunk_id: bytes) -> None:
        """Entry ``i`` names a chunk stored under its id (or the zero chunk)."""
        self.entries[i * ENTRY : (i + 1) * ENTRY] = chunk_id
        if self.patches:
            self.patches.pop(i, None)

    def set_patched(self, i: int, chunk_id: bytes, ref: PatchRef) -> None:
        """Entry ``i`` is the chunk ``chunk_id``, made of ``ref``'s base and patch."""
        self.entries[i * ENTRY : (i + 1) * ENTRY] = chunk_id
        self.patches[i] = ref

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(self.count))

    def chunk_length(self, i: int) -> int:
        return min(self.chunk_size, self.disk_size - i * self.chunk_size)

    def stored_ids(self) -> set[bytes]:
        """The ids of the objects the index needs: its entries' chunks, or their bases and patches."""
        patched = self.patches
        ids = {cid for i, cid in self.stored_entries() if i not in patched}
        for ref in patched.values():
            ids.add(ref.patch)
            if ref.base != ZERO_ID:
                ids.add(ref.base)
        return ids

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
        self.patches = {i: ref for i, ref in parent.patches.items() if i < n}

    def checksum(self) -> str:
        """Hex BLAKE3 of the entries: the disk's checksum recorded in the manifest."""
        return blake3.blake3(bytes(self.entries)).hexdigest()

    def to_bytes(self) -> bytes:
        version = 2 if self.patches else 1
        head = _HEADER.pack(_MAGIC, version, self.chunk_size, self.disk_size, self.count)
        if not self.patches:
            return head + bytes(self.entries)
        table = [_PATCH.pack(i, ref.base, ref.patch) for i, ref in sorted(self.patches.items())]
        return b"".join([head, bytes(self.entries), _COUNT.pack(len(table)), *table])

    @classmethod
    def from_bytes(cls, data: bytes) -> ChunkIndex:
        if len(data) < _HEADER.size:
            raise ObjectDamaged("index truncated")
        magic, version, chunk_size, disk_size, count = _HEADER.unpack_from(data)
        if magic != _MAGIC or version not in (1, 2):
            raise ObjectDamaged("not a version 1 or 2 chunk index")
        if chunk_size <= 0 or count != chunk_count(disk_size, chunk_size):
            raise ObjectDamaged(f"index of {count} chunks does not fit a disk of {disk_size} bytes")
        end = _HEADER.size + count * ENTRY
        short = len(data) < end + _COUNT.size if version == 2 else len(data) != end
        if short:
            raise ObjectDamaged(f"index length {len(data)} does not hold {count} entries")
        index = cls(chunk_size, disk_size, bytearray(data[_HEADER.size : end]))
        if version == 2:
            index.patches = _patch_table(data, end, index)
        return index


def _patch_table(data: bytes, at: int, index: ChunkIndex) -> dict[int, PatchRef]:
    """A version 2 index's patch table, checked: ascending entries, each a stored chunk with a patch."""
    (n,) = _COUNT.unpack_from(data, at)
    at += _COUNT.size
    if len(data) != at + n * _PATCH.size:
        raise ObjectDamaged(f"index length {len(data)} does not hold its {n} patched entries")
    patches: dict[int, PatchRef] = {}
    last = -1
    for k in range(n):
        i, base, patch = _PATCH.unpack_from(data, at + k * _PATCH.size)
        if i <= last or i >= index.count or index[i] == ZERO_ID or patch == ZERO_ID:
            raise ObjectDamaged(f"index's patched entry {i} is out of order, outside the disk or empty")
        patches[i] = PatchRef(base, patch)
        last = i
    return patches
