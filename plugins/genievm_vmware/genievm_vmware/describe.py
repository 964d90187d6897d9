"""A VM's disks and configuration, as GenieVM stores them.

Each disk is named ``disk-<device key>``: the key vSphere gives a virtual device is
stable for the life of the VM, and safe as a file name. The size is
``capacityInBytes``, or ``capacityInKB`` × 1024 where the former is unset (older
hosts, vcsim). The whole ``VirtualMachineConfigInfo`` is stored as vSphere's own
SOAP XML (``config_format`` ``vsphere-configinfo+xml``) of the API version the
server speaks, which pyvmomi reads back for a restore; the summary adds each
network card's backing kind and network name (``networks.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import SoapAdapter, vim

from genievm_core.errors import ProviderError
from genievm_core.models.vm import DiskInfo, VMDescription
from genievm_vmware.inventory import datacenter_of, vm_state
from genievm_vmware.networks import nic_summary

__all__ = ["CONFIG_FORMAT", "VMDisk", "describe", "disk_capacity", "load_config", "parse_datastore_path", "vm_disks"]

CONFIG_FORMAT = "vsphere-configinfo+xml"


@dataclass(frozen=True)
class VMDisk:
    """One virtual disk as pyvmomi shows it, with its datastore file split out."""

    name: str
    device: vim.vm.device.VirtualDisk
    datastore: str
    path: str  # inside the datastore: "vm1/vm1.vmdk"
    capacity: int

    @property
    def change_id(self) -> str | None:
        return getattr(self.device.backing, "changeId", None) or None


def disk_capacity(device: vim.vm.device.VirtualDisk) -> int:
    return int(device.capacityInBytes or 0) or int(device.capacityInKB or 0) * 1024


def parse_datastore_path(file_name: str) -> tuple[str, str]:
    """``[LocalDS_0] vm1/vm1.vmdk`` → (``LocalDS_0``, ``vm1/vm1.vmdk``)."""
    if not file_name.startswith("[") or "]" not in file_name:
        raise ProviderError(f"provider vmware: {file_name!r} is not a datastore path")
    datastore, _, path = file_name[1:].partition("]")
    return datastore, path.strip()


def vm_disks(devices: list[vim.vm.device.VirtualDevice]) -> list[VMDisk]:
    disks = []
    for device in devices:
        if not isinstance(device, vim.vm.device.VirtualDisk):
            continue
        backing: Any = device.backing
        file_name = getattr(backing, "fileName", None)
        if not file_name:
            raise ProviderError(
                f"provider vmware: disk {device.key} has a {type(device.backing).__name__} backing without a file"
            )
        datastore, path = parse_datastore_path(str(file_name))
        disks.append(VMDisk(f"disk-{device.key}", device, datastore, path, disk_capacity(device)))
    return disks


def _controller(devices: list[vim.vm.device.VirtualDevice], disk: vim.vm.device.VirtualDisk) -> str:
    for device in devices:
        if device.key == disk.controllerKey:
            kind = type(device).__name__.rsplit(".", 1)[-1]
            return f"{kind} bus {getattr(device, 'busNumber', 0)} unit {disk.unitNumber}"
    return f"controller {disk.controllerKey} unit {disk.unitNumber}"


def describe(vm: vim.VirtualMachine) -> VMDescription:
    config = vm.config
    if config is None:
        raise ProviderError(f"provider vmware: VM {vm.name} has no configuration (is it inaccessible?)")
    devices = list(config.hardware.device)
    dc = datacenter_of(vm)
    disks = []
    for d in vm_disks(devices):
        backing: Any = d.device.backing
        details = {
            "device_key": str(d.device.key),
            "controller": _controller(devices, d.device),
            "backing_file": str(backing.fileName),
            "datastore": d.datastore,
            "change_id": d.change_id or "",
            "cbt_source": "vsphere-cbt" if config.changeTrackingEnabled else "hash-compare",
        }
        disks.append(DiskInfo(d.name, d.capacity, "vmdk", "raw", str(backing.fileName), details))
    summary: dict[str, str | int | float | bool | None] = {
        "moref": vm._moId,
        "datacenter": dc.name,
        "state": vm_state(vm.runtime.powerState),
        "guest_id": config.guestId,
        "cpus": config.hardware.numCPU,
        "memory_mib": config.hardware.memoryMB,
        "firmware": config.firmware,
        "hardware_version": config.version,
        "cbt_enabled": bool(config.changeTrackingEnabled),
        **nic_summary(devices, dc),
    }
    return VMDescription(
        id=str(config.instanceUuid or vm._moId),
        name=str(vm.name),
        disks=tuple(disks),
        config=serialize_config(config, vm),
        config_format=CONFIG_FORMAT,
        summary=summary,
    )


def serialize_config(config: vim.vm.ConfigInfo, vm: vim.VirtualMachine) -> bytes:
    """``config`` as the API version the server speaks: pyvmomi's default, the version the ConfigInfo type
    came with, leaves out every newer type (a distributed or opaque network card's backing among them)."""
    version = getattr(getattr(vm, "_stub", None), "version", None)
    blob: bytes = SoapAdapter.Serialize(config, version=version)
    return blob


def load_config(blob: bytes) -> vim.vm.ConfigInfo:
    try:
        config: vim.vm.ConfigInfo = SoapAdapter.Deserialize(blob, vim.vm.ConfigInfo)
    except Exception as exc:  # the XML parser and pyvmomi raise many kinds
        raise ProviderError(f"provider vmware: the stored VM configuration cannot be read: {exc}") from exc
    if config is None or config.hardware is None:
        raise ProviderError("provider vmware: the stored VM configuration has no hardware")
    return config
