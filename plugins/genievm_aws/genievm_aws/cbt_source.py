"""``ebs-changed-blocks``: the CBT source this plugin registers (EBS direct ``ListChangedBlocks``).

It compares the snapshot a previous backup kept (the disk's token) with the
backup's new snapshot, which only an open backup knows: each disk source of a
backup offers it bound to its snapshot (``EBSDiskSource.cbt_sources``), and that
bound source is what the core asks. Asked on its own, it can only say "not
available". This module imports no boto3, so registering the source costs nothing.
"""

from __future__ import annotations

from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import ChangedExtents

__all__ = ["EBS_CHANGED_BLOCKS", "EBSChangedBlocks"]


class EBSChangedBlocks:
    name = "ebs-changed-blocks"
    priority = 20

    def supports(self, disk: DiskInfo) -> bool:
        return disk.storage_kind == "network" and disk.details.get("volume_id", "").startswith("vol-")

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        return ChangedExtents.unavailable(
            f"EBS ListChangedBlocks answers for disk {disk.name} only within a backup (it needs the new snapshot)"
        )


EBS_CHANGED_BLOCKS = EBSChangedBlocks()
