"""A VM's hardware in neither provider's words: what one provider's stored configuration says, and what
the other's is built from.

Only what carries over is here. What a translation leaves behind (VMware Tools, snapshots, passthrough
devices, a vTPM, ...) is in ``left_out``, one line each, which the restore logs as a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Firmware", "OSFamily", "PortableDisk", "PortableNic", "PortableVM"]

Firmware = Literal["bios", "efi"]
OSFamily = Literal["linux", "windows", "other"]


@dataclass(frozen=True)
class PortableDisk:
    """One disk of the backup, in the order the VM's controllers number them (the boot disk first)."""

    name: str  # the disk's name in the backup: disk-2000 (vmware), vda (kvm)
    bus: str  # the source's bus: scsi, sata, nvme, ide (vmware); virtio, sata, scsi, ide (kvm)


@dataclass(frozen=True)
class PortableNic:
    label: str  # how messages name the card: ethernet-0, interface 1
    network: str  # the source network's name; "" when the card names none
    mac: str  # "" when the source gives none
    model: str  # vmxnet3, e1000, e1000e, virtio, rtl8139, ...


@dataclass(frozen=True)
class PortableVM:
    source: str  # the provider whose configuration this was read from
    name: str
    cpus: int
    cores_per_socket: int
    memory_mib: int
    firmware: Firmware
    secure_boot: bool
    os_family: OSFamily
    disks: tuple[PortableDisk, ...]
    nics: tuple[PortableNic, ...]
    left_out: tuple[str, ...] = ()

    @property
    def sockets(self) -> int:
        cores = self.cores_per_socket if self.cores_per_socket > 0 and self.cpus % self.cores_per_socket == 0 else 1
        return self.cpus // cores
