"""How disk data moves between GenieVM and a vSphere datastore.

Two transports implement the same small protocol: ``vddk`` (VixDiskLib through
ctypes, loaded at run time) and ``https`` (ranged GETs and PUTs of datastore
files through ``/folder``). The provider picks one from its config and logs why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from genievm_core.models.extents import Extent

__all__ = ["DiskHandle", "DiskLocation", "DiskTransport"]


@dataclass(frozen=True)
class DiskLocation:
    """Where one virtual disk lives, as the provider found it through pyvmomi.

    ``path`` is the disk's descriptor inside its datastore, without the
    ``[datastore]`` prefix (``vm1/vm1.vmdk``); for a backup it is the disk of
    the snapshot being read. ``snapshot`` is the snapshot's MoRef id
    (``snapshot-7``) when reading a snapshot, None when writing a restored disk.
    """

    vm: str  # the VM's MoRef id, e.g. "vm-42" (VDDK's vmxSpec is "moref=vm-42")
    datacenter: str  # inventory name, e.g. "DC0" (the /folder URL's dcPath)
    datastore: str  # datastore name, e.g. "LocalDS_0"
    path: str
    capacity: int  # bytes
    snapshot: str | None = None


class DiskHandle(Protocol):
    """One open disk. Used from one thread at a time (the engine reads each disk from its own thread)."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``."""

    def write(self, offset: int, data: bytes) -> None: ...

    def allocated_extents(self) -> list[Extent] | None:
        """Extents that may hold data, or None when the transport cannot tell."""

    def close(self) -> None: ...


class DiskTransport(Protocol):
    """A connection for moving disk data; opened once per backup or restore, closed at the end."""

    name: str  # "vddk" or "https"

    def open(self, disk: DiskLocation, *, writable: bool = False) -> DiskHandle: ...

    def close(self) -> None: ...
