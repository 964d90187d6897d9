"""A ``PortableVM`` as a new libvirt domain: what ``restore --provider kvm`` defines for another provider's backup.

- CPUs (with the sockets × cores topology), memory, and the firmware: BIOS, or EFI with the OVMF files of
  Debian's ``ovmf`` (``OVMF_CODE_4M.fd`` and a copy of ``OVMF_VARS_4M.fd``; with Secure Boot the
  ``secboot`` code, the Microsoft keys' ``ms`` variables and SMM). Machine type q35.
- Disks in the source's order (the boot disk first) on one bus: ``sata`` by default, because a guest made
  on vSphere has no virtio drivers (Windows cannot boot from a virtio disk without viostor, and an
  initramfs built on VMware holds the drivers of its SCSI controller, not virtio's), while every guest
  has an AHCI driver; ``virtio`` (fastest) or ``scsi`` (virtio-scsi) when the guest has those drivers.
- Network cards on the libvirt network the map names (``bridge:NAME`` for a host bridge), else on
  ``default_network``, else on the network of the source's name; model ``e1000`` (a driver in every
  guest), ``virtio`` with the virtio disk bus. New MAC addresses (libvirt makes them) unless ``keep_macs``.
- A serial console, a VGA card and VNC on 127.0.0.1.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from genievm_core.errors import ConfigError, TranslationError
from genievm_core.translate.portable import PortableVM

__all__ = ["DISK_BUSES", "LibvirtDomain", "LibvirtTarget", "OVMF_DIR", "libvirt_domain"]

DISK_BUSES = ("sata", "virtio", "scsi")
OVMF_DIR = Path("/usr/share/OVMF")
_PREFIX = {"sata": "sd", "scsi": "sd", "virtio": "vd"}
_MAX_DISKS = {"sata": 6, "scsi": 256, "virtio": 26}  # q35 has one AHCI controller with 6 ports


@dataclass(frozen=True)
class LibvirtTarget:
    """How the new domain is made (the kvm provider's restore options)."""

    name: str
    domain_type: str = "kvm"  # qemu where /dev/kvm cannot be used
    disk_bus: str = "sata"
    network_map: Mapping[str, str] = field(default_factory=dict)  # source network → libvirt network; "" drops
    default_network: str | None = None
    no_nics: bool = False
    keep_macs: bool = False
    ovmf_dir: Path = OVMF_DIR


@dataclass(frozen=True)
class LibvirtDomain:
    xml: str  # the disks without a source: the restore points them at the files it wrote
    targets: dict[str, str]  # the backup's disk name → its target (sda, vda, ...)
    networks: tuple[str, ...]  # the libvirt networks the cards are on (the restore checks they exist)
    warnings: tuple[str, ...]


def _name(index: int, prefix: str) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def _firmware(os_el: ET.Element, vm: PortableVM, target: LibvirtTarget, features: ET.Element) -> None:
    if vm.firmware != "efi":
        return
    code, variables = ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd") if vm.secure_boot else (
        "OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd")  # fmt: skip
    for file in (code, variables):
        if not (target.ovmf_dir / file).is_file():
            raise TranslationError(
                f"cannot restore {vm.name} with EFI firmware: {target.ovmf_dir / file} is missing "
                "(apt-get install ovmf)"
            )
    loader = ET.SubElement(os_el, "loader", readonly="yes", type="pflash", secure="yes" if vm.secure_boot else "no")
    loader.text = str(target.ovmf_dir / code)
    ET.SubElement(os_el, "nvram", template=str(target.ovmf_dir / variables))
    if vm.secure_boot:
        ET.SubElement(features, "smm", state="on")


def libvirt_domain(vm: PortableVM, disks: Sequence[str], target: LibvirtTarget) -> LibvirtDomain:
    """The domain for ``vm`` with the backup's disks ``disks`` (those restored), in ``vm.disks``' order."""
    if target.disk_bus not in DISK_BUSES:
        buses = ", ".join(DISK_BUSES)
        raise ConfigError(f"invalid providerOptions: diskBus: {target.disk_bus!r} is not one of {buses}")
    if vm.cpus < 1 or vm.memory_mib < 1:
        raise TranslationError(f"cannot restore {vm.name}: its configuration gives {vm.cpus} CPUs, {vm.memory_mib} MiB")
    unknown = sorted(set(disks) - {d.name for d in vm.disks})
    if unknown:
        raise TranslationError(f"cannot restore {vm.name}: its stored configuration has no disk {unknown[0]}")
    ordered = [d for d in vm.disks if d.name in set(disks)]
    if len(ordered) > _MAX_DISKS[target.disk_bus]:
        raise TranslationError(
            f"cannot restore {vm.name}: {len(ordered)} disks do not fit the {target.disk_bus} bus "
            f"({_MAX_DISKS[target.disk_bus]} at most); choose -o diskBus=scsi"
        )
    warnings = list(vm.left_out)
    root = ET.Element("domain", type=target.domain_type)
    ET.SubElement(root, "name").text = target.name
    ET.SubElement(root, "description").text = f"restored by GenieVM from a {vm.source} backup of {vm.name}"
    ET.SubElement(root, "memory", unit="MiB").text = str(vm.memory_mib)
    ET.SubElement(root, "vcpu").text = str(vm.cpus)
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    _firmware(os_el, vm, target, features)
    cpu = ET.SubElement(root, "cpu")
    ET.SubElement(cpu, "topology", sockets=str(vm.sockets), cores=str(vm.cpus // vm.sockets), threads="1")
    ET.SubElement(root, "on_crash").text = "destroy"
    devices = ET.SubElement(root, "devices")
    targets: dict[str, str] = {}
    if target.disk_bus == "scsi":
        ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for i, disk in enumerate(ordered):
        dev = _name(i, _PREFIX[target.disk_bus])
        el = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(el, "driver", name="qemu", type="raw")
        ET.SubElement(el, "target", dev=dev, bus=target.disk_bus)
        if i == 0:
            ET.SubElement(el, "boot", order="1")
        targets[disk.name] = dev
    networks: list[str] = []
    model = "virtio" if target.disk_bus == "virtio" else "e1000"
    for nic in () if target.no_nics else vm.nics:
        mapped = target.network_map.get(nic.network)
        if mapped == "":
            warnings.append(f"network card {nic.label} on {nic.network!r}: dropped (networkMap)")
            continue
        network = mapped or target.default_network or nic.network
        if not network:
            raise ConfigError(
                f"invalid providerOptions: networkMap: card {nic.label} of {vm.name} names no network; map it with "
                "-o 'networkMap==TARGET', give -o defaultNetwork=TARGET, or drop the cards with -o noNics=true"
            )
        kind, _, bridge = network.partition(":") if network.startswith("bridge:") else ("network", "", network)
        el = ET.SubElement(devices, "interface", type=kind)
        if target.keep_macs and nic.mac:
            ET.SubElement(el, "mac", address=nic.mac)
        ET.SubElement(el, "source", {"bridge": bridge} if kind == "bridge" else {"network": network})
        ET.SubElement(el, "model", type=model)
        if kind == "network":
            networks.append(network)
    ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(devices, "console", type="pty")
    graphics = ET.SubElement(devices, "graphics", type="vnc", autoport="yes")
    ET.SubElement(graphics, "listen", type="address", address="127.0.0.1")
    video = ET.SubElement(devices, "video")
    ET.SubElement(video, "model", type="vga")
    ET.SubElement(devices, "input", type="tablet", bus="usb")
    return LibvirtDomain(ET.tostring(root, encoding="unicode"), targets, tuple(dict.fromkeys(networks)),
                         tuple(warnings))  # fmt: skip
