"""A VixDiskLib connection: ConnectEx to a vCenter or ESXi host for one VM (and snapshot).

VixDiskLib_ConnectEx takes a ``VixDiskLibConnectParams`` (server, SSL
thumbprint, ``vmxSpec = "moref=vm-42"``, user and password), whether the
disks will only be read, the snapshot's MoRef when reading a snapshot, and a
colon-separated list of transport modes to try in order ("nbdssl:nbd"); NULL
lets VDDK try all it knows.

The password is copied into a ctypes buffer of its own and the struct points
at it; VDDK's documentation does not promise that the connection keeps a copy,
so the buffer lives as long as the connection and is overwritten with zeros at
VixDiskLib_Disconnect (or when ConnectEx fails). It is never logged and never
part of an error message or a ``repr``.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger

from . import abi, logbridge
from .disk import Disk

if TYPE_CHECKING:
    from .session import VixDiskLib

__all__ = ["ConnectParams", "Connection"]

log = get_logger("genievm.vmware.vddk")

# Byte offsets in VixDiskLibConnectParams of the char * fields this module points at its own buffers.
_UID = abi.ConnectParams.creds.offset + abi.Creds.uid.offset
_STRING_FIELDS = {
    "vmxSpec": abi.ConnectParams.vmxSpec.offset,
    "serverName": abi.ConnectParams.serverName.offset,
    "thumbPrint": abi.ConnectParams.thumbPrint.offset,
    "userName": _UID + abi.UidPasswdCreds.userName.offset,
    "password": _UID + abi.UidPasswdCreds.password.offset,
}


@dataclass(frozen=True)
class ConnectParams:
    """What VixDiskLib_ConnectEx needs to reach a VM's disks.

    ``vmx_spec`` is ``"moref=<vm MoRef id>"`` for a VM managed by vCenter (or
    None for a connection that only opens disks by datastore path);
    ``thumbprint`` is the SHA-1 fingerprint of the host's certificate
    (``"AA:BB:..."``), required by VDDK 7 and later for every remote transport.
    """

    server: str
    user: str
    password: str = field(repr=False)
    thumbprint: str | None = None
    vmx_spec: str | None = None
    port: int = 0  # 0: VDDK's default (443)


class Connection:
    """One VixDiskLib connection (ConnectEx); disks are opened through it and it closes them at :meth:`disconnect`.

    ``Connection(lib, params, read_only=..., snapshot=..., modes=...)`` connects
    through ``lib``, an initialized :class:`~genievm_vmware.vddk.session.VixDiskLib`.
    """

    def __init__(
        self, lib: VixDiskLib, params: ConnectParams, *, read_only: bool, snapshot: str | None, modes: str | None
    ) -> None:
        self.lib = lib
        self.host = params.server
        self.user = params.user
        self.read_only = read_only
        self.snapshot = snapshot
        self.vm = params.vmx_spec
        self.disks: list[Disk] = []
        self._handle: int | None = None
        self._buffers: dict[str, Any] = {}
        self._params: Any = None
        self._password = params.password
        logbridge.hide(params.password)
        handle = abi.Connection()
        with lib.lock:
            try:
                self._fill_params(params)
                err = lib.library["VixDiskLib_ConnectEx"](
                    self._params,
                    1 if read_only else 0,
                    snapshot.encode() if snapshot else None,
                    modes.encode() if modes else None,
                    ctypes.byref(handle),
                )
                lib.check(err, "VixDiskLib_ConnectEx", host=self.host, user=self.user, subject=self.vm or "")
            except BaseException:
                self._release_params()
                raise
        self._handle = handle.value
        log.debug("vddk connected", host=self.host, vm=self.vm, snapshot=snapshot, modes=modes, read_only=read_only)

    @property
    def connected(self) -> bool:
        return self._handle is not None

    def _fill_params(self, params: ConnectParams) -> None:
        library = self.lib.library
        if library.has("VixDiskLib_AllocateConnectParams"):
            pointer = library["VixDiskLib_AllocateConnectParams"]()
            if not pointer:
                raise ProviderError("provider vmware: VixDiskLib_AllocateConnectParams returned NULL")
        else:  # a library older than VDDK 6.7 has no allocator; its struct is the one in abi
            self._buffers["struct"] = struct = abi.ConnectParams()
            pointer = ctypes.pointer(struct)
        self._params = pointer
        base = ctypes.addressof(pointer.contents)
        strings = {
            "vmxSpec": params.vmx_spec,
            "serverName": params.server,
            "thumbPrint": params.thumbprint,
            "userName": params.user,
            "password": params.password,
        }
        for name, value in strings.items():
            if value is None:
                continue
            buffer = ctypes.create_string_buffer(value.encode())
            self._buffers[name] = buffer
            ctypes.c_void_p.from_address(base + _STRING_FIELDS[name]).value = ctypes.addressof(buffer)
        pointer.contents.credType = abi.CRED_UID
        pointer.contents.port = params.port
        pointer.contents.specType = abi.SPEC_VMX

    def _release_params(self) -> None:
        """Unhook our buffers from the struct, free it, and zero the password."""
        if self._params is not None:
            base = ctypes.addressof(self._params.contents)
            for offset in _STRING_FIELDS.values():
                ctypes.c_void_p.from_address(base + offset).value = None
            if "struct" not in self._buffers:
                self.lib.library["VixDiskLib_FreeConnectParams"](self._params)
        password = self._buffers.get("password")
        if password is not None:
            ctypes.memset(password, 0, ctypes.sizeof(password))
        self._buffers.clear()
        self._params = None
        logbridge.unhide(self._password)
        self._password = ""

    def open(self, path: str, *, read_only: bool = True, unbuffered: bool = False) -> Disk:
        """VixDiskLib_Open of ``path`` (``"[datastore] dir/disk.vmdk"``); read-only unless asked.

        A connection made with ``read_only=True`` cannot open a disk for writing.
        """
        if self._handle is None:
            raise ProviderError(f"provider vmware: VDDK connection to {self.host} is closed")
        flags = (abi.FLAG_OPEN_READ_ONLY if read_only else 0) | (abi.FLAG_OPEN_UNBUFFERED if unbuffered else 0)
        handle = abi.Handle()
        with self.lib.lock:
            err = self.lib.library["VixDiskLib_Open"](self._handle, path.encode(), flags, ctypes.byref(handle))
            self.lib.check(err, "VixDiskLib_Open", host=self.host, user=self.user, subject=path)
        assert handle.value is not None
        disk = Disk(
            self.lib, handle.value, path, read_only=read_only, host=self.host, user=self.user, on_close=self._forget
        )
        self.disks.append(disk)
        return disk

    def _forget(self, disk: Disk) -> None:
        if disk in self.disks:
            self.disks.remove(disk)

    def disconnect(self) -> None:
        """Close the disks still open, then VixDiskLib_Disconnect. Safe to call twice, also after errors."""
        if self._handle is None:
            return
        first_error: BaseException | None = None
        for disk in list(self.disks):
            try:
                disk.close()
            except Exception as exc:  # keep going: every handle must be closed
                first_error = first_error or exc
        with self.lib.lock:
            handle, self._handle = self._handle, None
            try:
                err = self.lib.library["VixDiskLib_Disconnect"](handle)
            finally:
                self._release_params()
            try:
                self.lib.check(err, "VixDiskLib_Disconnect", host=self.host, user=self.user, subject=self.vm or "")
            except Exception as exc:
                first_error = first_error or exc
        log.debug("vddk disconnected", host=self.host, vm=self.vm)
        if first_error is not None:
            raise first_error

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.disconnect()
            return
        try:  # an error is on its way out already: it is the one to report
            self.disconnect()
        except Exception as cleanup:
            log.warning("vddk disconnect after an error failed", host=self.host, vm=self.vm, error=str(cleanup))
