"""What providers tell the core about VMs and disks: small frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DiskInfo", "VMDescription", "VMRef"]

StorageKind = Literal["raw-file", "qcow2-file", "block", "lvm-thin", "network", "vmdk", "other"]


@dataclass(frozen=True)
class VMRef:
    """A VM as listed by a provider."""

    id: str
    name: str
    state: str = "unknown"  # running, paused, stopped, ...


@dataclass(frozen=True)
class DiskInfo:
    """One disk of a VM.

    ``name`` is stable across backups of the VM (a device target such as
    ``vda``, or a VMware device key) and safe as a file name.
    """

    name: str
    size: int
    storage_kind: StorageKind
    format: str = "raw"
    location: str = ""  # path, volume or datastore file: informational
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VMDescription:
    """A VM's disks and configuration, as stored in its backups."""

    id: str
    name: str
    disks: tuple[DiskInfo, ...]
    config: bytes = b""  # the provider's own configuration, opaque to the core
    config_format: str = ""
    summary: dict[str, str | int | float | bool | None] = field(default_factory=dict)
