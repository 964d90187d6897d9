"""The ``vddk`` disk transport: VixDiskLib through :mod:`genievm_vmware.vddk`.

Each opened disk gets its own VixDiskLib connection (ConnectEx with
``vmxSpec = "moref=<vm>"``, the snapshot's MoRef when reading a snapshot, and
the configured transport modes), so disks can be read from different threads
and a failure on one disk leaves the others alone. VixDiskLib is initialized
once per process, when the first transport is made.

Transport modes: ``nbd``, ``nbdssl``, ``hotadd``, ``san``, or several joined
by colons (``"hotadd:nbdssl"``), tried in that order by VDDK; ``auto`` lets
VDDK try every mode it knows. ``hotadd`` and ``san`` only work where GenieVM
runs inside a VM on the same ESXi host, or sees the datastore's LUNs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from genievm_core.errors import ConfigError, GenieVMError
from genievm_core.logging import get_logger
from genievm_core.models.extents import Extent

from ..vddk import Connection, ConnectParams, Disk, VixDiskLib
from . import DiskLocation

__all__ = ["TRANSPORT_MODES", "VDDKDiskHandle", "VDDKTransport", "parse_modes"]

log = get_logger("genievm.vmware.vddk")

TRANSPORT_MODES = ("nbd", "nbdssl", "hotadd", "san")


def parse_modes(mode: str) -> str | None:
    """The transportModes string for VixDiskLib_ConnectEx, or None for VDDK's default ("auto")."""
    mode = mode.strip().lower()
    if mode in ("", "auto"):
        return None
    modes = [m.strip() for m in mode.split(":")]
    unknown = [m for m in modes if m not in TRANSPORT_MODES]
    if unknown:
        raise ConfigError(
            f"invalid configuration: VDDK transport mode: {mode!r} has {', '.join(unknown) or 'an empty mode'}; "
            f"use {', '.join(TRANSPORT_MODES)}, several joined by ':' or auto"
        )
    return ":".join(modes)


def datastore_path(disk: DiskLocation) -> str:
    """The path VixDiskLib_Open wants: ``"[datastore] dir/disk.vmdk"``."""
    return f"[{disk.datastore}] {disk.path}"


class VDDKDiskHandle:
    """One disk open through its own VixDiskLib connection; closing it closes both."""

    def __init__(
        self,
        location: DiskLocation,
        connection: Connection,
        disk: Disk,
        on_close: Callable[[VDDKDiskHandle], None] | None = None,
    ) -> None:
        self.location = location
        self._connection = connection
        self._disk = disk
        self._size = disk.size
        self._on_close = on_close

    @property
    def size(self) -> int:
        return self._size

    @property
    def transport_mode(self) -> str:
        return self._disk.transport_mode

    def read(self, offset: int, length: int) -> bytes:
        return self._disk.read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self._disk.write(offset, data)

    def allocated_extents(self) -> list[Extent] | None:
        return self._disk.allocated_blocks()

    @property
    def closed(self) -> bool:
        return not self._connection.connected

    def close(self) -> None:
        """VixDiskLib_Close then VixDiskLib_Disconnect; the disconnect happens even when Close fails."""
        try:
            self._disk.close()
        except BaseException:
            self._disconnect(quietly=True)  # Close's error is the one to report
            raise
        self._disconnect(quietly=False)

    def _disconnect(self, *, quietly: bool) -> None:
        try:
            self._connection.disconnect()
        except GenieVMError as exc:
            if not quietly:
                raise
            log.warning("vddk disconnect after a failed close failed", vm=self.location.vm, error=str(exc))
        finally:
            if self._on_close is not None:
                self._on_close(self)


class VDDKTransport:
    """Disk data through VixDiskLib (see the module docstring)."""

    name = "vddk"

    def __init__(self, *, libdir: Path, host: str, user: str, password: str, thumbprint: str | None, mode: str) -> None:
        self._modes = parse_modes(mode)
        self._lib = VixDiskLib.initialize(Path(libdir))
        self.host = host
        self.user = user
        self._password = password
        self.thumbprint = thumbprint
        self._handles: list[VDDKDiskHandle] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VDDKTransport(host={self.host!r}, user={self.user!r}, modes={self._modes!r})"

    def open(self, disk: DiskLocation, *, writable: bool = False) -> VDDKDiskHandle:
        """ConnectEx for the disk's VM (and snapshot), then Open the disk; read-only unless ``writable``."""
        params = ConnectParams(
            server=self.host,
            user=self.user,
            password=self._password,
            thumbprint=self.thumbprint,
            vmx_spec=f"moref={disk.vm}",
        )
        connection = Connection(self._lib, params, read_only=not writable, snapshot=disk.snapshot, modes=self._modes)
        try:
            opened = connection.open(datastore_path(disk), read_only=not writable)
            handle = VDDKDiskHandle(disk, connection, opened, on_close=self._forget)
        except BaseException:
            try:
                connection.disconnect()
            except GenieVMError as exc:  # the first error is the one to report
                log.warning("vddk disconnect after a failed open failed", vm=disk.vm, disk=disk.path, error=str(exc))
            raise
        with self._lock:
            self._handles.append(handle)
        log.info(
            "vddk disk open",
            vm=disk.vm,
            snapshot=disk.snapshot,
            disk=datastore_path(disk),
            writable=writable,
            transport_mode=handle.transport_mode,
        )
        return handle

    def _forget(self, handle: VDDKDiskHandle) -> None:
        with self._lock:
            if handle in self._handles:
                self._handles.remove(handle)

    @property
    def open_handles(self) -> int:
        """Disks opened through this transport and not closed yet."""
        with self._lock:
            return len(self._handles)

    def close(self) -> None:
        """Close every disk and connection still open; the first error is raised after all are closed.

        VixDiskLib stays initialized: VDDK allows one InitEx per process, so
        VixDiskLib_Exit runs at interpreter exit.
        """
        with self._lock:
            handles, self._handles = self._handles, []
        first_error: BaseException | None = None
        for handle in handles:
            try:
                handle.close()
            except Exception as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
