"""A disk restored into a new EBS snapshot: ``StartSnapshot``, ``PutSnapshotBlock``, ``CompleteSnapshot``.

The snapshot starts empty (``zeroed``: the engine skips zero chunks and zero
runs), so only blocks holding data are sent, each with its SHA-256, up to
``blockThreads`` at a time. The engine writes a disk in offset order, so a
512 KiB block that a write leaves partly filled is sent as soon as a later
write passes it (its unwritten bytes zeros): at most one partial block is held.
Reading back (the restore's verification) first seals the snapshot (the last
block sent, ``CompleteSnapshot``, completed), then reads it through EBS direct
like a backup does.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from genievm_aws.api import AWS
from genievm_aws.blocks import SnapshotBlocks, check_block_size, checksum
from genievm_aws.instances import GiB
from genievm_aws.snapshots import wait_for
from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger

__all__ = ["SnapshotSink"]

log = get_logger("genievm.aws.sink")


class SnapshotSink:
    """One new EBS snapshot being written, of a volume of ``size`` bytes (rounded up to whole GiB)."""

    def __init__(
        self,
        aws: AWS,
        name: str,
        size: int,
        tags: dict[str, str],
        threads: int,
        timeout: float,
        encryption: dict[str, Any] | None = None,
    ) -> None:
        """``encryption``: ``{"Encrypted": True}`` and maybe ``"KmsKeyId"``, for an encrypted snapshot."""
        self.aws = aws
        self.name = name
        self.size = size
        self.tags = tags
        self.timeout = timeout
        self.threads = threads
        encrypt = {}
        if encryption:
            encrypt["Encrypted"] = True
            if encryption.get("KmsKeyId"):
                encrypt["KmsKeyArn"] = encryption["KmsKeyId"]
        answer = aws.ebs(
            "start_snapshot",
            f"a snapshot for disk {name}",
            VolumeSize=max(1, -(-size // GiB)),
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
            Description=f"GenieVM restore of disk {name}",
            Timeout=60,  # minutes without a call before EBS gives up on the snapshot
            **encrypt,
        )
        self.snapshot_id: str = answer["SnapshotId"]
        self.block_size = check_block_size(int(answer.get("BlockSize") or 0), self.snapshot_id)
        self._zero = bytes(self.block_size)
        self._partial: dict[int, bytearray] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="genievm-ebs-write")
        self._inflight: list[Future[dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.blocks_written = 0
        self._sealed: SnapshotBlocks | None = None

    @property
    def zeroed(self) -> bool:
        return True

    def _put(self, index: int, data: bytes) -> None:
        if data == self._zero:
            return
        what = f"{self.snapshot_id} block {index}"
        future = self._pool.submit(
            self.aws.ebs,
            "put_snapshot_block",
            what,
            SnapshotId=self.snapshot_id,
            BlockIndex=index,
            BlockData=data,
            DataLength=len(data),
            Checksum=checksum(data),
            ChecksumAlgorithm="SHA256",
        )
        self.blocks_written += 1
        self._inflight.append(future)
        if len(self._inflight) >= 2 * self.threads:  # bounded memory: wait for the oldest half
            done, self._inflight = self._inflight[: self.threads], self._inflight[self.threads :]
            for f in done:
                f.result()

    def write(self, offset: int, data: bytes) -> None:
        if self._sealed is not None:
            raise ProviderError(f"provider aws: disk {self.name}: snapshot {self.snapshot_id} is sealed")
        bs = self.block_size
        with self._lock:
            for index in [i for i in self._partial if (i + 1) * bs <= offset]:  # passed: send it as it is
                self._put(index, bytes(self._partial.pop(index)))
            pos = 0
            while pos < len(data):
                index, within = divmod(offset + pos, bs)
                piece = data[pos : pos + bs - within]
                if within == 0 and len(piece) == bs:
                    self._put(index, bytes(piece))
                else:
                    block = self._partial.setdefault(index, bytearray(bs))
                    block[within : within + len(piece)] = piece
                pos += len(piece)

    def seal(self) -> str:
        """Send what is left, complete the snapshot and wait for it; its id."""
        if self._sealed is None:
            with self._lock:
                for index in sorted(self._partial):
                    self._put(index, bytes(self._partial.pop(index)))
                for f in self._inflight:
                    f.result()
                self._inflight = []
            self.aws.ebs(
                "complete_snapshot",
                self.snapshot_id,
                SnapshotId=self.snapshot_id,
                ChangedBlocksCount=self.blocks_written,
            )
            wait_for(self.aws, [self.snapshot_id], self.timeout)
            self._sealed = SnapshotBlocks(self.aws, self.snapshot_id, self.size, self.threads)
            log.info("aws.snapshot_written", disk=self.name, snapshot=self.snapshot_id, blocks=self.blocks_written)
        return self.snapshot_id

    def read(self, offset: int, length: int) -> bytes:
        self.seal()
        assert self._sealed is not None
        return self._sealed.read(offset, length)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._sealed is not None:
            self._sealed.close()
