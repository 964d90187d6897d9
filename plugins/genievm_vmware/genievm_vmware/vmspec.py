"""The ConfigSpec of a restored VM, built from the stored ``VirtualMachineConfigInfo``.

Kept: guest OS, CPUs, memory, firmware, hardware version, annotation, the SCSI,
SATA and NVMe controllers the restored disks hang on, the disks (new, thin,
with the stored capacities and the same bus and unit), and the network cards
(new MAC addresses, networks mapped by ``networkMap``, else the network of
the same name, else ``defaultNetwork``; dropped with ``noNics`` or a
``SOURCE=`` mapping). Left out: disks that
are not restored, CD-ROMs, floppies, serial ports and other devices whose
backings name files or hosts of the source site. Devices the VM always gets
(IDE, PS/2, PCI, SIO controllers, video, VMCI) are not added.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyVmomi import vim

from genievm_core.errors import ConfigError
from genievm_core.logging import get_logger
from genievm_vmware.networks import backing_networks
from genievm_vmware.options import VMwareOptions
from genievm_vmware.placement import Placement

__all__ = ["DiskSlot", "network_backing", "new_vm_spec", "slot"]

log = get_logger("genievm.vmware.restore")
DiskSlot = tuple[str, int, int]  # controller kind, bus number, unit number: how disks of two VMs are matched
_CONTROLLERS: tuple[type[Any], ...] = (
    vim.vm.device.VirtualSCSIController,
    vim.vm.device.VirtualSATAController,
    vim.vm.device.VirtualNVMEController,
)


def slot(devices: list[vim.vm.device.VirtualDevice], disk: vim.vm.device.VirtualDisk) -> DiskSlot:
    for device in devices:
        if device.key == disk.controllerKey:
            kind = type(device).__name__.rsplit(".", 1)[-1]
            kind = "scsi" if isinstance(device, vim.vm.device.VirtualSCSIController) else kind
            return kind, int(getattr(device, "busNumber", 0) or 0), int(disk.unitNumber or 0)
    return "unknown", 0, int(disk.unitNumber or 0)


def _nic_backing(
    nic: vim.vm.device.VirtualEthernetCard, where: Placement, options: VMwareOptions, recorded: str
) -> vim.vm.device.VirtualDevice.BackingInfo | None:
    """The backing of a restored card on the network its source maps to; None: the card is dropped."""
    kind, names = backing_networks(nic.backing)
    names = [recorded, *names] if recorded and recorded not in names else names or [""]
    mapped = next((options.network_map[n] for n in names if n in options.network_map), None)
    if mapped == "":
        return None  # SOURCE= : dropped
    target_name = mapped or next((n for n in names if n in where.networks), None) or options.default_network
    target = where.networks.get(target_name or "")
    if target is None:
        source = names[0]
        card = nic.deviceInfo.label if nic.deviceInfo else nic.key
        backing = f"{kind} backing on {source!r}" if source else "a backing that names no network"
        raise ConfigError(
            f"invalid providerOptions: networkMap: network {target_name or source!r} (card {card}, {backing}) is "
            f"not in datacenter {where.datacenter.name} ({', '.join(sorted(where.networks))}); map it with "
            f"-o 'networkMap={source}=TARGET', give -o 'defaultNetwork=TARGET', or drop the cards with -o noNics=true"
        )
    return network_backing(target)


def network_backing(target: vim.Network) -> vim.vm.device.VirtualDevice.BackingInfo:
    """A card's backing on ``target``: a distributed port group, an opaque network or a standard one."""
    if isinstance(target, vim.dvs.DistributedVirtualPortgroup):
        switch: Any = target.config.distributedVirtualSwitch
        port = vim.dvs.PortConnection(portgroupKey=target.key, switchUuid=switch.uuid)
        return vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    if isinstance(target, vim.OpaqueNetwork):
        summary: Any = target.summary
        return vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo(
            opaqueNetworkId=summary.opaqueNetworkId, opaqueNetworkType=summary.opaqueNetworkType
        )
    return vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=target.name, network=target)


def new_vm_spec(
    config: vim.vm.ConfigInfo,
    name: str,
    where: Placement,
    disks: Mapping[int, int],  # stored device key → capacity in bytes, of the disks restored
    options: VMwareOptions,  # networkMap, defaultNetwork, noNics
    recorded: Mapping[str, str] | None = None,  # device key → the network name the backup recorded
) -> vim.vm.ConfigSpec:
    hardware: Any = config.hardware
    devices: list[Any] = list(hardware.device)
    changes: list[vim.vm.device.VirtualDeviceSpec] = []
    add = vim.vm.device.VirtualDeviceSpec.Operation.add
    keys: dict[int, int] = {}  # stored key → temporary (negative) key of the new device

    def new_key(old: int) -> int:
        keys[old] = -(len(keys) + 1)
        return keys[old]

    used = {d.controllerKey for d in devices if isinstance(d, vim.vm.device.VirtualDisk) and d.key in disks}
    for device in devices:
        if isinstance(device, _CONTROLLERS) and device.key in used:
            controller: Any = type(device)(key=new_key(device.key), busNumber=getattr(device, "busNumber", 0))
            if isinstance(device, vim.vm.device.VirtualSCSIController):
                controller.sharedBus = getattr(device, "sharedBus", None) or "noSharing"
            changes.append(vim.vm.device.VirtualDeviceSpec(operation=add, device=controller))
    ds = f"[{where.datastore.name}]"
    for device in devices:
        if isinstance(device, vim.vm.device.VirtualDisk):
            if device.key not in disks:
                log.warning("vmware.disk_left_out", vm=name, disk=f"disk-{device.key}", reason="not restored")
                continue
            size = disks[device.key]
            backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName=ds,
                datastore=where.datastore,
                diskMode=getattr(device.backing, "diskMode", None) or "persistent",
                thinProvisioned=True,
            )
            disk = vim.vm.device.VirtualDisk(
                key=new_key(device.key),
                controllerKey=keys.get(int(device.controllerKey or 0), device.controllerKey),
                unitNumber=device.unitNumber,
                capacityInKB=(size + 1023) // 1024,
                capacityInBytes=size,
                backing=backing,
            )
            changes.append(vim.vm.device.VirtualDeviceSpec(operation=add, fileOperation="create", device=disk))
        elif isinstance(device, vim.vm.device.VirtualEthernetCard):
            on = (recorded or {}).get(str(device.key), "")
            network = None if options.no_nics else _nic_backing(device, where, options, on)
            if network is None:
                log.warning("vmware.nic_left_out", vm=name, nic=str(device.key), reason="noNics or networkMap")
                continue
            nic = type(device)(
                key=new_key(device.key),
                addressType="generated",
                backing=network,
                connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, allowGuestControl=True),
            )
            changes.append(vim.vm.device.VirtualDeviceSpec(operation=add, device=nic))
    return vim.vm.ConfigSpec(
        name=name,
        guestId=config.guestId,
        numCPUs=hardware.numCPU,
        numCoresPerSocket=hardware.numCoresPerSocket,
        memoryMB=hardware.memoryMB,
        firmware=config.firmware,
        version=config.version,
        annotation=config.annotation,
        files=vim.vm.FileInfo(vmPathName=ds),
        deviceChange=changes,
    )
