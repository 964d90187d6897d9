"""moto's EC2 and EBS, served over real HTTP in this process, taught the one thing about EBS that moto lacks: data.

What moto 5 implements, and these tests rely on unchanged: EC2 instances,
volumes, ``CreateSnapshots`` (one snapshot per volume of an instance, tags),
``DescribeSnapshots``, ``DeleteSnapshot``, ``RegisterImage``, ``RunInstances``;
EBS direct ``StartSnapshot``, ``PutSnapshotBlock`` (the checksum stored as
given), ``CompleteSnapshot``, ``ListSnapshotBlocks``, ``GetSnapshotBlock``.

What it cannot model, and this module adds (each a small wrapper of moto's own
backend methods, in this process only):

- A volume has no content in moto, and a snapshot made by EC2 (``CreateSnapshot``,
  ``CreateSnapshots``) is unknown to its EBS direct side (``ListSnapshotBlocks`` on
  it answers 500). Here a volume's content is ``VOLUMES[volume_id]`` (block index →
  512 KiB), written by the tests as a guest would (``write_volume``); an EC2 snapshot
  copies it into an EBS direct snapshot, completed, with SHA-256 checksums, as EBS
  does; a volume created from a snapshot gets the snapshot's blocks.
- moto reports ``BlockSize`` 512; EBS's blocks are 512 KiB: set so.
- Deleting a snapshot in EC2 leaves its EBS direct twin readable in moto: removed.
- ``ListChangedBlocks`` in moto lists only blocks the first snapshot has, missing
  blocks written since into a hole; here it also lists those, as EBS does.
- ``FAULTS[operation]``: what the next calls do instead of answering: raise an error
  (throttling, ...), or, for ``get_snapshot_block``, ``CORRUPT``: send the block with
  one byte flipped (its checksum still the original's), as a damaged transfer would.

Not modelled at all: an AMI's block device mapping (moto's ``RegisterImage``
drops it, so an instance launched from a restored AMI does not get the restored
volumes), IAM permissions (moto's own IAM checks are used where a test needs them),
snapshot progress (every snapshot is completed at once), and paging (moto never
returns ``NextToken`` for these calls).

Why not the moto_server that ``scripts/services/s3.sh`` starts for the S3 tests:
it runs in another process, where none of the above can be added; the S3 tests
need none of it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

from moto.core.exceptions import JsonRESTError
from moto.ebs.models import Block, EBSBackend, EBSSnapshot, ebs_backends
from moto.ec2.models import EC2Backend
from moto.server import ThreadedMotoServer

__all__ = ["BLOCK", "CORRUPT", "FAULTS", "VOLUMES", "moto_aws", "read_volume", "throttled", "write_volume"]

BLOCK = 512 << 10
VOLUMES: dict[str, dict[int, bytes]] = {}
CORRUPT = "corrupt"
FAULTS: dict[str, list[Exception | str]] = {}


def checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def throttled() -> Exception:
    return JsonRESTError("RequestThrottledException", "Rate exceeded (injected by the test)")


def write_volume(volume_id: str, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset`` of the volume, as the instance's guest would."""
    blocks = VOLUMES.setdefault(volume_id, {})
    pos = 0
    while pos < len(data):
        index, within = divmod(offset + pos, BLOCK)
        piece = data[pos : pos + BLOCK - within]
        block = bytearray(blocks.get(index, bytes(BLOCK)))
        block[within : within + len(piece)] = piece
        blocks[index] = bytes(block)
        pos += len(piece)


def read_volume(volume_id: str, size: int) -> bytes:
    blocks = VOLUMES.get(volume_id, {})
    return b"".join(blocks.get(i, bytes(BLOCK)) for i in range(size // BLOCK))


def _ebs(backend: Any) -> EBSBackend:
    return ebs_backends[backend.account_id][backend.region_name]


def _fault(operation: str) -> str | None:
    pending = FAULTS.get(operation)
    if not pending:
        return None
    fault = pending.pop(0)
    if isinstance(fault, Exception):
        raise fault
    return fault


def _patches() -> list[Any]:
    create_snapshot = EC2Backend.create_snapshot
    delete_snapshot = EC2Backend.delete_snapshot
    create_volume = EC2Backend.create_volume
    copy_snapshot = EC2Backend.copy_snapshot
    start_snapshot = EBSBackend.start_snapshot
    get_snapshot_block = EBSBackend.get_snapshot_block

    def snapshot_with_data(self: Any, volume_id: str, *args: Any, **kwargs: Any) -> Any:
        snapshot = create_snapshot(self, volume_id, *args, **kwargs)
        direct = EBSSnapshot(account_id=self.account_id, snapshot=snapshot)
        direct.block_size, direct.status = BLOCK, "completed"
        for index, data in VOLUMES.get(volume_id, {}).items():
            direct.put_block(index, data, checksum(data), "SHA256", len(data))
        _ebs(self).snapshots[snapshot.id] = direct
        return snapshot

    def delete_both(self: Any, snapshot_id: str) -> Any:
        gone = delete_snapshot(self, snapshot_id)
        _ebs(self).snapshots.pop(snapshot_id, None)
        return gone

    def copy_with_data(self: Any, source_snapshot_id: str, *args: Any, **kwargs: Any) -> Any:
        """A copy holds its source's blocks, as on AWS (moto copies only the EC2 record)."""
        snapshot = copy_snapshot(self, source_snapshot_id, *args, **kwargs)
        source = _ebs(self).snapshots.get(source_snapshot_id)
        if source is not None:
            direct = EBSSnapshot(account_id=self.account_id, snapshot=snapshot)
            direct.block_size, direct.status = source.block_size, "completed"
            for index, block in source.blocks.items():
                data = block.block_data
                direct.put_block(index, data, checksum(data), "SHA256", len(data))
            _ebs(self).snapshots[snapshot.id] = direct
        return snapshot

    def volume_from_snapshot(self: Any, *args: Any, **kwargs: Any) -> Any:
        volume = create_volume(self, *args, **kwargs)
        snapshot_id = kwargs.get("snapshot_id") or (args[2] if len(args) > 2 else None)
        direct = _ebs(self).snapshots.get(snapshot_id or "")
        if direct is not None:
            VOLUMES[volume.id] = {i: b.block_data for i, b in direct.blocks.items()}
        return volume

    def start_with_ebs_block_size(self: Any, *args: Any, **kwargs: Any) -> Any:
        snapshot = start_snapshot(self, *args, **kwargs)
        snapshot.block_size = BLOCK
        return snapshot

    def get_block(self: Any, snapshot_id: str, block_index: int) -> Any:
        fault = _fault("get_snapshot_block")
        block = get_snapshot_block(self, snapshot_id, block_index)
        if fault == CORRUPT:
            damaged = bytes([block.block_data[0] ^ 0xFF]) + block.block_data[1:]
            return Block(damaged, block.checksum, block.checksum_algorithm, block.data_length)
        return block

    def changed_blocks(self: Any, first_snapshot_id: str, second_snapshot_id: str) -> Any:
        first, second = self.snapshots[first_snapshot_id], self.snapshots[second_snapshot_id]
        changed = {}
        for index in sorted(set(first.blocks) | set(second.blocks)):
            a, b = first.blocks.get(index), second.blocks.get(index)
            if a is None or b is None or a.block_data != b.block_data:
                changed[index] = (a.block_token if a else None, b.block_token if b else None)
        return changed, first

    return [
        mock.patch.object(EC2Backend, "create_snapshot", snapshot_with_data),
        mock.patch.object(EC2Backend, "delete_snapshot", delete_both),
        mock.patch.object(EC2Backend, "create_volume", volume_from_snapshot),
        mock.patch.object(EC2Backend, "copy_snapshot", copy_with_data),
        mock.patch.object(EBSBackend, "start_snapshot", start_with_ebs_block_size),
        mock.patch.object(EBSBackend, "get_snapshot_block", get_block),
        mock.patch.object(EBSBackend, "list_changed_blocks", changed_blocks),
    ]


@contextmanager
def moto_aws() -> Iterator[str]:
    """moto's server on a free port of 127.0.0.1, with the additions above; its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    with ExitStack() as stack:
        for patch in _patches():
            stack.enter_context(patch)
        server.start()
        stack.callback(server.stop)
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
