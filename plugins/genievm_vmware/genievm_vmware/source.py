"""A disk at a backup's snapshot: data through a transport, changed areas from vSphere CBT."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyVmomi import vim

from genievm_core.engine import CountingDiskSource
from genievm_core.errors import CBTError
from genievm_core.logging import get_logger
from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import BoundCBTSource, CBTSource, ChangedExtents
from genievm_vmware.cbt import ALL_AREAS, CBTRefused, changed_areas, is_reset
from genievm_vmware.cbt_source import VSPHERE_CBT
from genievm_vmware.describe import VMDisk
from genievm_vmware.transport import DiskHandle

__all__ = ["SnapshotDisk", "VMwareDiskSource"]

log = get_logger("genievm.vmware.source")
SOURCE = VSPHERE_CBT.name


@dataclass(frozen=True)
class SnapshotDisk:
    """One disk of the backup's snapshot, and whether CBT answers for it."""

    vm: vim.VirtualMachine
    snapshot: vim.vm.Snapshot
    disk: VMDisk
    cbt: bool  # CBT is on and the snapshot's disk carries a changeId


class VMwareDiskSource(CountingDiskSource):
    """Reads one disk of the snapshot through a transport; its changed areas come from vSphere CBT."""

    def __init__(self, info: DiskInfo, handle: DiskHandle, at: SnapshotDisk) -> None:
        super().__init__(info, handle.read, handle.close)
        self._handle = handle
        self._at = at

    def _areas(self, change_id: str) -> list[Extent]:
        d = self._at.disk
        return changed_areas(self._at.vm, self._at.snapshot, d.device.key, d.capacity, change_id)

    def allocated_extents(self) -> list[Extent] | None:
        """CBT's allocated areas (``changeId='*'``) where CBT is on, else what the transport can tell."""
        if self._at.cbt:
            try:
                return self._areas(ALL_AREAS)
            except CBTError as exc:
                log.warning("vmware.allocated_areas_unavailable", disk=self._info.name, error=str(exc))
        return self._handle.allocated_extents()

    def changed_extents(self, token: str | None) -> ChangedExtents:
        if not self._at.cbt:
            return ChangedExtents.unavailable("changed-block tracking is off on the VM (enableCBT turns it on)")
        if not token:
            return ChangedExtents.unavailable("the parent backup stored no changeId for this disk")
        current = self._at.disk.change_id
        if is_reset(token, current):
            return ChangedExtents.unavailable(
                f"changed-block tracking was reset since the parent backup (changeId {token} → {current})"
            )
        try:
            return ChangedExtents(self._areas(token), SOURCE)
        except CBTRefused as exc:
            return ChangedExtents.unavailable(str(exc))

    def cbt_sources(self) -> Sequence[CBTSource]:
        """``vsphere-cbt`` bound to this backup's snapshot (``OffersCBTSources``): the core asks it."""
        return [BoundCBTSource(VSPHERE_CBT, self.changed_extents)]

    def next_token(self) -> str | None:
        return self._at.disk.change_id if self._at.cbt else None
