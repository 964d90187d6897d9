"""VixDiskLib error codes, and their translation into GenieVM errors.

A ``VixError`` is 64 bits wide; only the low 16 bits are the code
(``VIX_ERROR_CODE(err) = err & 0xFFFF``), the upper bits carry detail that the
library's own text (``VixDiskLib_GetErrorText``) already describes. Every
translated error names the VixDiskLib call, the library's text and the code.

Translation:

- login refused (``VIX_E_AUTHENTICATION_FAIL``, ``VIX_E_HOST_USER_PERMISSIONS``,
  ``VIX_E_INVALID_AUTHENTICATION_SESSION``, ``VIX_E_LOGIN_TYPE_NOT_SUPPORTED``)
  -> :class:`~genievm_core.errors.AuthenticationError`;
- ``VIX_E_VM_NOT_FOUND`` -> :class:`~genievm_core.errors.VMNotFoundError`;
- everything else, a missing disk file or a full datastore included, ->
  :class:`~genievm_core.errors.ProviderError`: the datastore belongs to the
  hypervisor, not to GenieVM's storage target, so ``StorageFullError`` (whose
  exit code tells operators to free repository space) would mislead.
"""

from __future__ import annotations

from enum import IntEnum

from genievm_core.errors import AuthenticationError, ProviderError, VMNotFoundError

__all__ = ["VixErrorCode", "error_code", "translate"]


class VixErrorCode(IntEnum):
    """The VIX error codes GenieVM names (values from ``vixDiskLib.h``)."""

    VIX_OK = 0
    VIX_E_FAIL = 1
    VIX_E_OUT_OF_MEMORY = 2
    VIX_E_INVALID_ARG = 3
    VIX_E_FILE_NOT_FOUND = 4
    VIX_E_OBJECT_IS_BUSY = 5
    VIX_E_NOT_SUPPORTED = 6
    VIX_E_FILE_ERROR = 7
    VIX_E_DISK_FULL = 8
    VIX_E_CANCELLED = 10
    VIX_E_FILE_READ_ONLY = 11
    VIX_E_FILE_ALREADY_EXISTS = 12
    VIX_E_FILE_ACCESS_ERROR = 13
    VIX_E_FILE_ALREADY_LOCKED = 15
    VIX_E_OBJECT_NOT_FOUND = 25
    VIX_E_HOST_NOT_CONNECTED = 26
    VIX_E_AUTHENTICATION_FAIL = 35
    VIX_E_HOST_CONNECTION_LOST = 36
    VIX_E_INVALID_HANDLE = 1000
    VIX_E_HOST_USER_PERMISSIONS = 3014
    VIX_E_LOGIN_TYPE_NOT_SUPPORTED = 3032
    VIX_E_INVALID_AUTHENTICATION_SESSION = 3047
    VIX_E_VM_NOT_FOUND = 4000
    VIX_E_SNAPSHOT_NOTFOUND = 13003
    VIX_E_HOST_SERVER_NOT_FOUND = 14008
    VIX_E_HOST_NETWORK_CONN_REFUSED = 14009
    VIX_E_DISK_INVAL = 16000
    VIX_E_DISK_NOINIT = 16001
    VIX_E_DISK_NOIO = 16002
    VIX_E_DISK_OUTOFRANGE = 16007
    VIX_E_CANNOT_CONNECT_TO_HOST = 18000
    VIX_E_NET_HTTP_SSL_SECURITY = 30201


_LOGIN_REFUSED = frozenset(
    {
        VixErrorCode.VIX_E_AUTHENTICATION_FAIL,
        VixErrorCode.VIX_E_HOST_USER_PERMISSIONS,
        VixErrorCode.VIX_E_INVALID_AUTHENTICATION_SESSION,
        VixErrorCode.VIX_E_LOGIN_TYPE_NOT_SUPPORTED,
    }
)


def error_code(err: int) -> int:
    """``VIX_ERROR_CODE(err)``: the code in the low 16 bits of a VixError."""
    return err & 0xFFFF


def code_name(code: int) -> str:
    try:
        return VixErrorCode(code).name
    except ValueError:
        return "VIX error"


def translate(err: int, text: str, call: str, *, host: str, user: str, subject: str = "") -> ProviderError:
    """The GenieVM error for VixError ``err`` from VixDiskLib function ``call``.

    ``text`` is the library's description of ``err``; ``subject`` names what the
    call was about (a disk path, a VM) and may be empty. Never pass a password in
    any argument: the message is shown to users and written to logs.
    """
    code = error_code(err)
    what = f"{call} {subject}".rstrip()
    detail = f"{text} ({code_name(code)}, code {code})"
    if code in _LOGIN_REFUSED:
        return AuthenticationError(f"authentication failed for {user} at {host}: {call}: {detail}")
    if code == VixErrorCode.VIX_E_VM_NOT_FOUND:
        return VMNotFoundError(f"no VM {subject or '?'} on provider vmware: {call}: {detail}")
    return ProviderError(f"provider vmware: {what} at {host}: {detail}")
