"""The ConfigSpec of a new VM for another provider's backup (kvm), from ``genievm_core.translate``'s
``VSphereSpec``: its CPUs, memory, firmware, one SCSI controller with the disks (new, thin, of the
backed-up sizes) and network cards on the port groups it names, which must be in the datacenter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyVmomi import vim

from genievm_core.errors import ConfigError
from genievm_core.translate import VSphereSpec
from genievm_vmware.placement import Placement
from genievm_vmware.vmspec import DiskSlot, network_backing

__all__ = ["translated_vm_spec"]

_CONTROLLERS: dict[str, type[Any]] = {
    "pvscsi": vim.vm.device.ParaVirtualSCSIController,
    "lsilogic-sas": vim.vm.device.VirtualLsiLogicSASController,
    "lsilogic": vim.vm.device.VirtualLsiLogicController,
}
_NICS: dict[str, type[Any]] = {
    "vmxnet3": vim.vm.device.VirtualVmxnet3,
    "e1000e": vim.vm.device.VirtualE1000e,
    "e1000": vim.vm.device.VirtualE1000,
}


def translated_vm_spec(
    spec: VSphereSpec, name: str, where: Placement, sizes: Mapping[str, int]
) -> tuple[vim.vm.ConfigSpec, dict[str, DiskSlot]]:
    """The ConfigSpec, and the slot of each of the backup's disks on the new VM (how its disks are found)."""
    add = vim.vm.device.VirtualDeviceSpec.Operation.add
    controller = _CONTROLLERS[spec.scsi_controller](key=-1, busNumber=0, sharedBus="noSharing")
    changes = [vim.vm.device.VirtualDeviceSpec(operation=add, device=controller)]
    ds = f"[{where.datastore.name}]"
    slots: dict[str, DiskSlot] = {}
    for i, disk in enumerate(spec.disks):
        size = sizes[disk.name]
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=ds, datastore=where.datastore, diskMode="persistent", thinProvisioned=True
        )
        device = vim.vm.device.VirtualDisk(
            key=-(i + 2),
            controllerKey=-1,
            unitNumber=disk.unit,
            capacityInKB=(size + 1023) // 1024,
            capacityInBytes=size,
            backing=backing,
        )
        changes.append(vim.vm.device.VirtualDeviceSpec(operation=add, fileOperation="create", device=device))
        slots[disk.name] = ("scsi", 0, disk.unit)
    for i, nic in enumerate(spec.nics):
        target = where.networks.get(nic.network)
        if target is None:
            raise ConfigError(
                f"invalid providerOptions: networkMap: network {nic.network!r} (card {nic.label}, on "
                f"{nic.source_network or 'no network'!r} in the backup) is not in datacenter {where.datacenter.name} "
                f"({', '.join(sorted(where.networks))}); map it with -o 'networkMap={nic.source_network}=TARGET', "
                "give -o 'defaultNetwork=TARGET', or drop the cards with -o noNics=true"
            )
        card = _NICS[nic.model](
            key=-(100 + i),
            addressType="generated",
            backing=network_backing(target),
            connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, allowGuestControl=True),
        )
        changes.append(vim.vm.device.VirtualDeviceSpec(operation=add, device=card))
    boot = vim.vm.BootOptions(efiSecureBootEnabled=True) if spec.secure_boot else None
    config = vim.vm.ConfigSpec(
        name=name,
        guestId=spec.guest_id,
        numCPUs=spec.cpus,
        numCoresPerSocket=spec.cores_per_socket,
        memoryMB=spec.memory_mib,
        firmware=spec.firmware,
        bootOptions=boot,
        annotation="restored by GenieVM from a kvm backup",
        files=vim.vm.FileInfo(vmPathName=ds),
        deviceChange=changes,
    )
    return config, slots
