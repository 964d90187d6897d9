"""Changed-block tracking for KVM disks: the CBT sources this plugin registers.

Sources, highest priority first (the core chooses one per disk among those that support it):

- ``libvirt-checkpoint`` (30): qcow2 disks of a running or paused VM. Each backup creates a
  libvirt checkpoint; the next reads the dirty bitmap of the backup job's NBD export.
- ``qcow2-bitmap`` (20): qcow2 disks of a stopped VM: a persistent bitmap in the image, read
  with ``qemu-nbd -B``. A libvirt checkpoint's bitmap serves too.
- ``lvm-thin`` (10): thin LVs, by ``thin_delta`` between two thin snapshots.

During a backup each disk source offers these sources bound to its point in time
(``BoundCBTSource``), so the core's choice is answered from the backup's own export; on
their own (as registered), they open what they need from the disk's ``details``.

Raw files, plain block devices and network disks have none: the engine compares chunk ids
with the parent's index (hash compare), and the manifest says why.
"""

from __future__ import annotations

from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import CBTSource, ChangedExtents
from genievm_kvm.chain import BITMAP_SOURCE, CHECKPOINT_SOURCE, RUNNING
from genievm_kvm.lvm_thin import LVMThinCBT

__all__ = ["CBT_SOURCES", "LibvirtCheckpointCBT", "Qcow2BitmapCBT"]


class LibvirtCheckpointCBT:
    """Checkpoints of libvirt's backup API.

    A backup reads the dirty bitmap of its own job's export (``live.py``); on its own, this
    source starts a short job for one disk to export the bitmap of checkpoint ``token``.
    """

    name = CHECKPOINT_SOURCE
    priority = 30

    def supports(self, disk: DiskInfo) -> bool:
        return disk.storage_kind == "qcow2-file" and disk.details.get("vm_state") in RUNNING

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        if not token:
            return ChangedExtents.unavailable("no checkpoint to compare with")
        from genievm_kvm.connection import connect, find_domain  # libvirt: not for every command that loads plugins
        from genievm_kvm.live import checkpoint_changes, job_place

        conn = connect(disk.details["uri"])
        try:
            dom = find_domain(conn, disk.details["vm_uuid"])
            if token not in {c.getName() for c in dom.listAllCheckpoints()}:
                return ChangedExtents.unavailable(f"checkpoint {token} is not on the VM")
            return ChangedExtents(
                checkpoint_changes(dom, disk.name, token, job_place(disk.details["uri"], {})), self.name
            )
        finally:
            conn.close()


class Qcow2BitmapCBT:
    """Persistent dirty bitmaps in qcow2 images of stopped VMs (see ``offline.py``)."""

    name = BITMAP_SOURCE
    priority = 20

    def supports(self, disk: DiskInfo) -> bool:
        return disk.storage_kind == "qcow2-file" and disk.details.get("vm_state") not in RUNNING

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        from genievm_kvm.offline import bitmap_changes

        return bitmap_changes(disk, token)


CBT_SOURCES: tuple[CBTSource, ...] = (LibvirtCheckpointCBT(), Qcow2BitmapCBT(), LVMThinCBT())
