"""Which transport moves a backup's or restore's data, from the provider options; the reason is logged.

``transport``: ``https`` | ``vddk`` | ``auto`` (default). ``auto`` takes VDDK when a
VDDK folder is configured (``vddkLibDir`` or the ``VDDK_LIBDIR`` variable) and the
library loads, and the HTTPS datastore transport otherwise. ``vddk`` asked for
explicitly fails when VDDK cannot be used, rather than falling back silently.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from genievm_core.errors import ConfigError, GenieVMError, ProviderError
from genievm_core.logging import get_logger
from genievm_vmware.connection import Endpoint, ssl_context
from genievm_vmware.options import VMwareOptions
from genievm_vmware.transport import DiskTransport
from genievm_vmware.transport.https import HTTPSTransport

__all__ = ["choose_transport", "server_thumbprint"]

log = get_logger("genievm.vmware.transport")


def choose_transport(
    options: VMwareOptions,
    ep: Endpoint,
    cookie: str,
    *,
    scratch_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> DiskTransport:
    env = os.environ if environ is None else environ
    mode = options.transport
    libdir = str(options.vddk_lib_dir or env.get("VDDK_LIBDIR") or "")

    def https(reason: str) -> DiskTransport:
        log.info("vmware.transport", transport="https", reason=reason)
        scratch = options.scratch_dir or scratch_dir
        return HTTPSTransport(host=ep.host, port=ep.port, cookie=cookie, context=ssl_context(ep), scratch_dir=scratch)

    if mode == "https":
        return https("transport=https")
    if mode == "vddk":
        if not libdir:
            raise ConfigError("invalid providerOptions: transport vddk needs vddkLibDir (or VDDK_LIBDIR)")
        transport = _vddk(options, ep, Path(libdir))
        log.info("vmware.transport", transport="vddk", reason="transport=vddk", libdir=libdir)
        return transport
    if not libdir:
        return https("auto: no vddkLibDir or VDDK_LIBDIR")
    try:
        transport = _vddk(options, ep, Path(libdir))
    except (GenieVMError, OSError) as exc:
        return https(f"auto: VDDK at {libdir} cannot be used: {exc}")
    log.info("vmware.transport", transport="vddk", reason=f"auto: VDDK loaded from {libdir}")
    return transport


def _vddk(options: VMwareOptions, ep: Endpoint, libdir: Path) -> DiskTransport:
    try:
        from genievm_vmware.transport.vddk import VDDKTransport  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ConfigError(
            f"invalid providerOptions: transport vddk: this genievm-vmware has no VDDK transport ({exc})"
        ) from exc
    thumbprint = options.thumbprint or server_thumbprint(ep)
    mode = options.vddk_mode or "nbdssl"
    transport: DiskTransport = VDDKTransport(
        libdir=libdir, host=ep.host, user=ep.user, password=ep.password, thumbprint=thumbprint, mode=mode
    )
    return transport


def server_thumbprint(ep: Endpoint) -> str | None:
    """The SHA-1 thumbprint (``AA:BB:...``) of the host's certificate, over a verified handshake, as VDDK wants it."""
    try:
        with (
            socket.create_connection((ep.host, ep.port), timeout=30) as sock,
            ssl_context(ep).wrap_socket(sock, server_hostname=ep.host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise ProviderError(f"provider vmware: cannot read the TLS certificate of {ep.where}: {exc}") from exc
    if not der:
        return None
    digest = hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - VDDK identifies hosts by SHA-1 thumbprint
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
