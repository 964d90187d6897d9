"""A completed EBS snapshot's blocks through the EBS direct APIs: listed, read in parallel, checksums checked.

EBS snapshots are made of 512 KiB blocks (``BlockSize``); a block never
written is not listed and reads as zeros. A read of the engine's (a chunk,
which may be smaller or larger than a block) fetches the blocks it covers in
parallel, ``blockThreads`` at a time, and keeps the last ones fetched, so chunks
smaller than a block cost one ``GetSnapshotBlock`` per block, not one per chunk.
Every block's SHA-256 is checked against the checksum EBS sends with it; a
mismatch is retried like a dropped connection, then fails the backup.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from genievm_aws.api import AWS, BlockChecksumError
from genievm_core.errors import ProviderError
from genievm_core.models.extents import Extent, clip, normalize

__all__ = ["SnapshotBlocks", "changed_blocks", "checksum", "check_block_size"]


def checksum(data: bytes) -> str:
    """EBS's checksum of a block: base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def check_block_size(size: int, snapshot_id: str) -> int:
    if size < 512 or size & (size - 1):
        raise ProviderError(f"provider aws: snapshot {snapshot_id} reports block size {size}, not a power of two")
    return size


def _listed(aws: AWS, operation: str, what: str, key: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every entry of a paged EBS listing (``Blocks`` or ``ChangedBlocks``), and the block size."""
    entries: list[dict[str, Any]] = []
    while True:
        page = aws.ebs(operation, what, **params)
        entries += page.get(key, [])
        if not page.get("NextToken"):
            return entries, int(page.get("BlockSize") or 0)
        params["NextToken"] = page["NextToken"]


def changed_blocks(aws: AWS, base: str, snapshot: str, size: int) -> list[Extent]:
    """The byte ranges that differ between snapshots ``base`` and ``snapshot`` of one volume (ListChangedBlocks)."""
    entries, block = _listed(
        aws,
        "list_changed_blocks",
        f"{base}..{snapshot}",
        "ChangedBlocks",
        FirstSnapshotId=base,
        SecondSnapshotId=snapshot,
    )
    block = check_block_size(block, snapshot)
    return clip(normalize(Extent(int(e["BlockIndex"]) * block, block) for e in entries), size)


class SnapshotBlocks:
    """Reads one completed snapshot by byte ranges; blocks fetched in parallel and checked."""

    def __init__(self, aws: AWS, snapshot_id: str, size: int, threads: int) -> None:
        self.aws = aws
        self.snapshot_id = snapshot_id
        self.size = size
        entries, block = _listed(aws, "list_snapshot_blocks", snapshot_id, "Blocks", SnapshotId=snapshot_id)
        self.block_size = check_block_size(block, snapshot_id)
        self.tokens = {int(e["BlockIndex"]): str(e["BlockToken"]) for e in entries}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="genievm-ebs-read")
        self._kept: OrderedDict[int, bytes] = OrderedDict()
        self._keep = max(2, 2 * threads)
        self._lock = threading.Lock()
        self.blocks_read = 0

    def extents(self) -> list[Extent]:
        """Where the snapshot holds data: its listed blocks."""
        return clip(normalize(Extent(i * self.block_size, self.block_size) for i in self.tokens), self.size)

    def _fetch(self, index: int) -> bytes:
        what = f"{self.snapshot_id} block {index}"

        def get() -> bytes:
            answer = self.aws.ebs_client.get_snapshot_block(
                SnapshotId=self.snapshot_id, BlockIndex=index, BlockToken=self.tokens[index]
            )
            data: bytes = answer["BlockData"].read()  # inside the retried call: a body cut short is tried again
            if len(data) != self.block_size or int(answer.get("DataLength", len(data))) != len(data):
                raise BlockChecksumError(f"block {index} came with {len(data)} bytes, not {self.block_size}")
            algorithm, expected = answer.get("ChecksumAlgorithm"), answer.get("Checksum")
            if algorithm == "SHA256" and expected and checksum(data) != expected:
                raise BlockChecksumError(f"block {index} does not match its SHA-256 checksum")
            return data

        data = self.aws.retried("ebs", "get_snapshot_block", what, get)
        with self._lock:
            self.blocks_read += 1
        return data

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        first, last = offset // self.block_size, (offset + length - 1) // self.block_size
        with self._lock:
            have = {i: self._kept[i] for i in range(first, last + 1) if i in self._kept}
        wanted = [i for i in range(first, last + 1) if i in self.tokens and i not in have]
        fetched = dict(zip(wanted, self._pool.map(self._fetch, wanted), strict=True))
        with self._lock:
            for i, data in fetched.items():
                self._kept[i] = data
            while len(self._kept) > self._keep:
                self._kept.popitem(last=False)
        blocks = have | fetched
        zero = bytes(self.block_size)
        joined = b"".join(blocks.get(i, zero) for i in range(first, last + 1))
        start = offset - first * self.block_size
        return joined[start : start + length]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
