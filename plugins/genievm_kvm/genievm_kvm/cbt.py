"""Changed-block tracking for KVM disks, and the factory that picks a source per disk.

Sources, highest priority first:

- ``libvirt-checkpoint`` (30): qcow2 disks of a running or paused VM. Each backup creates a
  libvirt checkpoint; the next reads the dirty bitmap of the backup job's NBD export.
- ``qcow2-bitmap`` (20): qcow2 disks of a stopped VM: a persistent bitmap in the image, read
  with ``qemu-nbd -B``. A libvirt checkpoint's bitmap serves too.
- ``lvm-thin`` (10): thin LVs, by ``thin_delta`` between two thin snapshots.

Raw files, plain block devices and network disks have none: the engine compares chunk ids
with the parent's index (hash compare), and the manifest says why.

Checkpoint and bitmap names are ``genievm-<repository id>-<time>``: they belong to GenieVM
and to one repository, so two backup chains of one VM never touch each other's.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import CBTSource, ChangedExtents

__all__ = ["LibvirtCheckpointCBT", "Qcow2BitmapCBT", "choose", "chain_prefix", "new_checkpoint_name"]

log = structlog.get_logger("genievm.kvm.cbt")

RUNNING = ("running", "paused")


def chain_prefix(chain_id: str) -> str:
    return f"genievm-{chain_id[:16]}-"


def new_checkpoint_name(chain_id: str) -> str:
    return chain_prefix(chain_id) + datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


class LibvirtCheckpointCBT:
    """Checkpoints of libvirt's backup API.

    A backup reads the dirty bitmap of its own job's export (``live.py``); on its own, this
    source starts a short job for one disk to export the bitmap of checkpoint ``token``.
    """

    name = "libvirt-checkpoint"
    priority = 30

    def supports(self, disk: DiskInfo) -> bool:
        return disk.storage_kind == "qcow2-file" and disk.details.get("vm_state") in RUNNING

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        from genievm_kvm.connection import connect, find_domain
        from genievm_kvm.live import checkpoint_changes
        from genievm_kvm.provider import job_place

        if not token:
            return ChangedExtents.unavailable("no checkpoint to compare with")
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

    name = "qcow2-bitmap"
    priority = 20

    def supports(self, disk: DiskInfo) -> bool:
        return disk.storage_kind == "qcow2-file" and disk.details.get("vm_state") not in RUNNING

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        from genievm_kvm.offline import bitmap_changes

        return bitmap_changes(disk, token)


def choose(disk: DiskInfo, sources: list[CBTSource]) -> CBTSource | None:
    """The highest-priority source that supports ``disk``; logs the choice."""
    for source in sorted(sources, key=lambda s: -s.priority):
        if source.supports(disk):
            log.info("kvm.cbt_source", disk=disk.name, kind=disk.storage_kind, source=source.name)
            return source
    log.info("kvm.cbt_source", disk=disk.name, kind=disk.storage_kind, source=None)
    return None
