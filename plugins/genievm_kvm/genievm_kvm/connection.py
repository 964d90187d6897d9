"""Connecting to libvirt, and turning libvirt's errors into GenieVM's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import NoReturn

import libvirt

from genievm_core.errors import AuthenticationError, ProviderError, VMNotFoundError
from genievm_core.logging import redact_url
from genievm_kvm.remote import Askpass

__all__ = ["connect", "find_domain", "libvirt_errors", "raise_for"]

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no copies of every error on stderr

_PERMISSION = {libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_ERR_ACCESS_DENIED}


def raise_for(exc: libvirt.libvirtError, what: str) -> NoReturn:
    """Re-raise a libvirt error as the GenieVM error that says what went wrong."""
    code, message = exc.get_error_code(), _one_line(exc.get_error_message() or str(exc))
    if code == libvirt.VIR_ERR_AUTH_FAILED or "Permission denied (" in message:
        raise AuthenticationError(f"provider kvm: {what}: authentication failed: {message}") from exc
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        raise VMNotFoundError(f"provider kvm: {what}: no such VM") from exc
    if code in _PERMISSION or "Permission denied" in message:
        raise ProviderError(f"provider kvm: {what}: permission denied: {message}") from exc
    raise ProviderError(f"provider kvm: {what}: {message}") from exc


def _one_line(message: str) -> str:
    """libvirt passes on ssh's stderr: keep its lines that say something, on one line."""
    lines = [
        ln.strip() for ln in message.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently added")
    ]
    return "; ".join(lines)


@contextmanager
def libvirt_errors(what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise_for(exc, what)


def connect(uri: str, *, read_only: bool = False, askpass: Askpass | None = None) -> libvirt.virConnect:
    """Open ``uri`` (``qemu:///system``, ``qemu+ssh://user@host/system`` with SSH keys, or the password
    ``askpass`` gives).

    A read-only connection lists and describes VMs; libvirt refuses it anything else.
    """
    try:
        with askpass.for_libvirt() if askpass else nullcontext():
            conn = libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise_for(exc, f"cannot connect to {redact_url(uri)}")
    if conn is None:  # pragma: no cover - old bindings returned None instead of raising
        raise ProviderError(f"provider kvm: cannot connect to {redact_url(uri)}")
    return conn


def find_domain(conn: libvirt.virConnect, vm_id: str) -> libvirt.virDomain:
    """A domain by UUID or by name."""
    for lookup in (conn.lookupByUUIDString, conn.lookupByName):
        try:
            return lookup(vm_id)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_INVALID_ARG):
                raise_for(exc, f"looking up VM {vm_id}")
    raise VMNotFoundError(f"no VM {vm_id} on provider kvm ({redact_url(conn.getURI())})")
