"""``vsphere-cbt``: the CBT source this plugin registers (vSphere's QueryChangedDiskAreas).

It needs the backup's snapshot and a vSphere session, which a ``DiskInfo`` does not carry:
each disk source of a backup offers it bound to its snapshot (``VMwareDiskSource.cbt_sources``),
and that bound source is what the core asks. Asked on its own, it can only say "not available".
This module imports no pyVmomi, so registering the source costs nothing.
"""

from __future__ import annotations

from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import ChangedExtents

__all__ = ["VSPHERE_CBT", "VSphereCBT"]


class VSphereCBT:
    name = "vsphere-cbt"
    priority = 20

    def supports(self, disk: DiskInfo) -> bool:
        return disk.storage_kind == "vmdk" and "device_key" in disk.details

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        return ChangedExtents.unavailable(
            f"vSphere CBT answers for disk {disk.name} only within a backup's snapshot (no vSphere session here)"
        )


VSPHERE_CBT = VSphereCBT()
