"""A backup's point in time: one crash-consistent snapshot set, its volumes read through EBS direct.

Each disk source reads its volume's new snapshot (``SnapshotBlocks``); its
allocated extents are the snapshot's listed blocks, and its changed extents
since a token (the snapshot a previous backup kept) come from
``ListChangedBlocks``, offered to the core as the bound ``ebs-changed-blocks``
source. A base that is gone, of another volume or not completed is "not
available": the core then compares chunk ids with the parent's index.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from genievm_aws.api import AWS, error_code
from genievm_aws.blocks import SnapshotBlocks, changed_blocks
from genievm_aws.cbt_source import EBS_CHANGED_BLOCKS
from genievm_aws.instances import find_instance
from genievm_aws.options import AWSOptions
from genievm_aws.snapshots import SnapshotSet, prune_kept, sweep_leftovers, wait_for
from genievm_core.engine import CountingDiskSource, DiskSources
from genievm_core.errors import CBTError, ProviderError
from genievm_core.logging import get_logger
from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo, VMDescription
from genievm_core.plugin.protocols import BackupRequest, BoundCBTSource, CBTSource, ChangedExtents

__all__ = ["EBSDiskSource", "snapshot_backup"]

log = get_logger("genievm.aws.backup")
SNAPSHOT_ID = re.compile(r"^snap-[0-9a-f]{8,17}$")
SOURCE = EBS_CHANGED_BLOCKS.name


class EBSDiskSource(CountingDiskSource):
    """One volume at the backup's snapshot; its token is that snapshot's id when it is kept."""

    def __init__(self, aws: AWS, info: DiskInfo, blocks: SnapshotBlocks, kept: bool) -> None:
        super().__init__(info, blocks.read, blocks.close)
        self.aws = aws
        self.blocks = blocks
        self.kept = kept

    @property
    def snapshot_id(self) -> str:
        return self.blocks.snapshot_id

    def allocated_extents(self) -> list[Extent]:
        return self.blocks.extents()

    def changed_extents(self, token: str | None) -> ChangedExtents:
        if not token:
            return ChangedExtents.unavailable(
                "the parent backup kept no EBS snapshot of this volume (-o keepSnapshots=N keeps one as the next base)"
            )
        if not SNAPSHOT_ID.match(token):
            return ChangedExtents.unavailable(f"the parent's token {token!r} is not an EBS snapshot id")
        volume = self._info.details.get("volume_id")
        try:
            base = self.aws.ec2("describe_snapshots", token, SnapshotIds=[token])["Snapshots"]
        except ProviderError as exc:
            if error_code(exc.__cause__ or exc).startswith("InvalidSnapshot"):
                return ChangedExtents.unavailable(f"the parent's snapshot {token} no longer exists")
            raise CBTError(f"changed-block tracking failed for disk {self._info.name}: {exc}") from exc
        if not base:
            return ChangedExtents.unavailable(f"the parent's snapshot {token} no longer exists")
        if base[0].get("VolumeId") != volume:
            return ChangedExtents.unavailable(
                f"the parent's snapshot {token} is of volume {base[0].get('VolumeId')}, not {volume}"
            )
        if base[0].get("State") != "completed":
            return ChangedExtents.unavailable(f"the parent's snapshot {token} is {base[0].get('State')}, not completed")
        try:
            return ChangedExtents(changed_blocks(self.aws, token, self.snapshot_id, self._info.size), SOURCE)
        except ProviderError as exc:
            raise CBTError(f"changed-block tracking failed for disk {self._info.name}: {exc}") from exc

    def cbt_sources(self) -> Sequence[CBTSource]:
        """``ebs-changed-blocks`` bound to this backup's snapshot (``OffersCBTSources``): the core asks it."""
        return [BoundCBTSource(EBS_CHANGED_BLOCKS, self.changed_extents)]

    def next_token(self) -> str | None:
        return self.snapshot_id if self.kept else None


# [guide:aws-backup]
@contextmanager
def snapshot_backup(
    aws: AWS, options: AWSOptions, desc: VMDescription, request: BackupRequest
) -> Iterator[DiskSources]:
    instance: dict[str, Any] = find_instance(aws, desc.id)
    infos = {d.name: d for d in desc.disks}
    unknown = [n for n in request.disks if n not in infos]
    if unknown:
        raise ProviderError(f"provider aws: instance {desc.id} has no disk {unknown[0]}")
    root = next(
        (m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", [])
         if m.get("DeviceName") == instance.get("RootDeviceName") and "Ebs" in m),
        None,
    )  # fmt: skip
    volumes = [infos[n].details["volume_id"] for n in request.disks]
    keep = options.keep_snapshots if request.enable_cbt else 0  # --no-cbt: no base is kept (nor pruned)
    sweep_leftovers(aws, desc.id, request.chain_id)
    attached = [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m]
    snapshots = SnapshotSet(aws, desc.id, request.chain_id, volumes, attached, root)
    done = False
    try:
        with ExitStack() as stack:
            wait_for(aws, list(snapshots.by_volume.values()), options.snapshot_timeout_seconds)
            sources: dict[str, CountingDiskSource] = {}
            for name in request.disks:
                info = infos[name]
                blocks = SnapshotBlocks(
                    aws, snapshots.by_volume[info.details["volume_id"]], info.size, options.block_threads
                )
                stack.callback(blocks.close)
                sources[name] = EBSDiskSource(aws, info, blocks, kept=keep > 0)
                log.info(
                    "aws.disk_open", instance=desc.id, disk=name, snapshot=blocks.snapshot_id, blocks=len(blocks.tokens)
                )
            yield DiskSources(sources)
        done = True
    finally:
        if done and keep:
            snapshots.keep()
        else:
            snapshots.discard()
        if done and request.enable_cbt:  # keepSnapshots lowered (to 0 too): the older bases go
            prune_kept(aws, desc.id, request.chain_id, keep)


# [/guide:aws-backup]
