"""A vSphere ``VirtualMachineConfigInfo`` (the SOAP XML the vmware provider stores, ``vsphere-configinfo+xml``)
read as a ``PortableVM``, with ElementTree alone: the core never needs pyvmomi.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

from genievm_core.errors import TranslationError
from genievm_core.translate.portable import Firmware, OSFamily, PortableDisk, PortableNic, PortableVM

__all__ = ["CONFIG_FORMAT", "os_family", "read_vsphere"]

CONFIG_FORMAT = "vsphere-configinfo+xml"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_BUSES = {
    "ParaVirtualSCSIController": "scsi",
    "VirtualLsiLogicController": "scsi",
    "VirtualLsiLogicSASController": "scsi",
    "VirtualBusLogicController": "scsi",
    "VirtualSCSIController": "scsi",
    "VirtualAHCIController": "sata",
    "VirtualSATAController": "sata",
    "VirtualNVMEController": "nvme",
    "VirtualIDEController": "ide",
}
_BUS_ORDER = ("scsi", "sata", "nvme", "ide")
_NICS = {
    "VirtualVmxnet3": "vmxnet3",
    "VirtualVmxnet3Vrdma": "vmxnet3",
    "VirtualVmxnet2": "vmxnet2",
    "VirtualVmxnet": "vmxnet",
    "VirtualE1000": "e1000",
    "VirtualE1000e": "e1000e",
    "VirtualPCNet32": "pcnet",
}
_LEFT_OUT = {
    "VirtualPCIPassthrough": "passthrough device {label}: a host's hardware, not carried over",
    "VirtualSriovEthernetCard": "SR-IOV card {label}: a host's hardware, not carried over",
    "VirtualUSB": "USB device {label} (passed through from a host): not carried over",
    "VirtualTPM": "vTPM {label}: its keys stay in vSphere; the new VM has no TPM (BitLocker and the like will "
    "ask for their recovery keys)",
    "VirtualCdrom": "CD-ROM {label}: left out (its media is a file of the source site)",
    "VirtualFloppy": "floppy {label}: left out",
    "VirtualSerialPort": "serial port {label}: left out",
    "VirtualParallelPort": "parallel port {label}: left out",
}
_LINUX = ("linux", "debian", "ubuntu", "rhel", "centos", "sles", "fedora", "oracle", "photon", "coreos", "asianux",
          "mandr", "opensuse", "turbo", "amazon", "rocky", "alma", "mandriva", "suse")  # fmt: skip


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element | None, name: str) -> ET.Element | None:
    if el is None:
        return None
    return next((c for c in el if _local(c.tag) == name), None)


def _text(el: ET.Element | None, *path: str) -> str:
    for name in path:
        el = _child(el, name)
    return (el.text or "").strip() if el is not None else ""


def _int(el: ET.Element | None, *path: str, default: int = 0) -> int:
    text = _text(el, *path)
    try:
        return int(text) if text else default
    except ValueError as exc:
        raise TranslationError(f"cannot translate the vSphere configuration: {'/'.join(path)} is {text!r}") from exc


def os_family(guest_id: str) -> OSFamily:
    """``windows9_64Guest``: windows; ``debian12_64Guest``, ``otherLinux64Guest``: linux; else other."""
    low = guest_id.lower()
    if low.startswith("win"):
        return "windows"
    return "linux" if any(word in low for word in _LINUX) else "other"


def read_vsphere(config: bytes, summary: Mapping[str, object] | None = None) -> PortableVM:
    """The stored ConfigInfo's hardware; ``summary``'s ``nic.<key>.network`` names a card's network where the
    stored backing does not (a distributed or opaque one)."""
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise TranslationError(f"cannot translate the vSphere configuration: it is not XML ({exc})") from exc
    hardware = _child(root, "hardware")
    if hardware is None:
        raise TranslationError("cannot translate the vSphere configuration: it has no hardware")
    firmware = _text(root, "firmware") or "bios"
    if firmware not in ("bios", "efi"):
        raise TranslationError(f"cannot translate firmware {firmware!r}: only bios and efi are known")
    devices = [d for d in hardware if _local(d.tag) == "device"]
    kinds = {_int(d, "key"): (d.get(_XSI_TYPE, "").rsplit(":", 1)[-1], d) for d in devices}
    left_out: list[str] = []
    disks: list[tuple[tuple[int, int, int, int], PortableDisk]] = []
    nics: list[PortableNic] = []
    boot_disk = _int(root, "bootOptions", "bootOrder", "deviceKey", default=-1)
    for key, (kind, device) in kinds.items():
        label = _text(device, "deviceInfo", "label") or f"device {key}"
        if kind == "VirtualDisk":
            controller_kind, controller = kinds.get(_int(device, "controllerKey"), ("", None))
            bus = _BUSES.get(controller_kind, "scsi")
            order = (0 if key == boot_disk else 1, _BUS_ORDER.index(bus), _int(controller, "busNumber"),
                     _int(device, "unitNumber"))  # fmt: skip
            disks.append((order, PortableDisk(f"disk-{key}", bus)))
            backing = _child(device, "backing")
            if _child(backing, "parent") is not None:
                left_out.append(f"snapshots of disk-{key}: the backup holds the disk as it was; no snapshot is kept")
        elif kind in _NICS:
            recorded = str((summary or {}).get(f"nic.{key}.network") or "")
            network = recorded or _text(device, "backing", "deviceName")
            nics.append(PortableNic(label, network, _text(device, "macAddress"), _NICS[kind]))
        elif kind in _LEFT_OUT:
            left_out.append(_LEFT_OUT[kind].format(label=label))
    tools = _child(root, "tools")
    if tools is not None and (_int(tools, "toolsVersion") > 0 or _text(tools, "toolsInstallType")):
        left_out.append("VMware Tools: they do not run on this hypervisor; install its guest agent in the guest")
    cpus = _int(hardware, "numCPU", default=1)
    fw: Firmware = "efi" if firmware == "efi" else "bios"
    return PortableVM(
        source="vmware",
        name=_text(root, "name"),
        cpus=cpus,
        cores_per_socket=_int(hardware, "numCoresPerSocket", default=1),
        memory_mib=_int(hardware, "memoryMB"),
        firmware=fw,
        secure_boot=_text(root, "bootOptions", "efiSecureBootEnabled") == "true",
        os_family=os_family(_text(root, "guestId")),
        disks=tuple(d for _, d in sorted(disks, key=lambda pair: pair[0])),
        nics=tuple(nics),
        left_out=tuple(left_out),
    )
