"""A backup's point in time: stale snapshots swept, CBT on when asked, one GenieVM snapshot, removed at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from pyVmomi import vim

from genievm_core.engine import DiskSources
from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger
from genievm_core.models.vm import VMDescription
from genievm_core.plugin.protocols import BackupRequest
from genievm_vmware.cbt import cbt_enabled, enable_cbt
from genievm_vmware.connection import vsphere_errors
from genievm_vmware.describe import vm_disks
from genievm_vmware.inventory import datacenter_of, datacenter_path
from genievm_vmware.snapshot import genievm_snapshot, sweep_stale
from genievm_vmware.source import SnapshotDisk, VMwareDiskSource
from genievm_vmware.transport import DiskLocation, DiskTransport

__all__ = ["snapshot_backup"]

log = get_logger("genievm.vmware.backup")


@contextmanager
def snapshot_backup(
    vm: vim.VirtualMachine,
    desc: VMDescription,
    request: BackupRequest,
    open_transport: Callable[[], DiskTransport],
) -> Iterator[DiskSources]:
    sweep_stale(vm)
    if request.enable_cbt and not cbt_enabled(vm):
        enable_cbt(vm)
    cbt = request.enable_cbt and cbt_enabled(vm)
    infos = {d.name: d for d in desc.disks}
    with vsphere_errors(f"VM {vm.name}: reading its datacenter"):
        datacenter = datacenter_path(datacenter_of(vm))
    with genievm_snapshot(vm, quiesce=request.quiesce) as snapshot, ExitStack() as stack:
        transport = open_transport()
        stack.callback(transport.close)
        with vsphere_errors(f"VM {vm.name}: reading the snapshot's disks"):
            disks = {d.name: d for d in vm_disks(list(snapshot.config.hardware.device))}
        sources = {}
        for name in request.disks:
            disk = disks.get(name)
            if disk is None:
                raise ProviderError(f"provider vmware: VM {vm.name} has no disk {name} in its snapshot")
            if transport.name == "https" and getattr(disk.device.backing, "parent", None) is not None:
                raise ProviderError(
                    f"provider vmware: VM {vm.name} has older snapshots, so disk {name} is a delta file the "
                    "https transport cannot read whole; remove them or use -o transport=vddk"
                )
            where = DiskLocation(vm._moId, datacenter, disk.datastore, disk.path, disk.capacity, snapshot._moId)
            handle = transport.open(where)
            stack.callback(handle.close)
            at = SnapshotDisk(vm, snapshot, disk, cbt and disk.change_id is not None)
            sources[name] = VMwareDiskSource(infos[name], handle, at)
            log.info("vmware.disk_open", vm=vm.name, disk=name, transport=transport.name, cbt=at.cbt)
        yield DiskSources(sources)
