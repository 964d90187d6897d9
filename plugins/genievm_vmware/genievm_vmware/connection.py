"""Connecting to vCenter or ESXi through pyvmomi, and turning vSphere's faults into GenieVM's errors.

TLS is verified by default, against the system's CAs or ``caFile``; ``insecure``
turns verification off and must be asked for. The password comes from the
provider option ``password`` (a config file), the environment variable
``GENIEVM_VMWARE_PASSWORD``, the file named by ``passwordFile``, or a prompt on a
terminal, in that order. It is never logged, never put in an error, and kept out
of ``repr``.
"""

from __future__ import annotations

import getpass
import os
import ssl
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from genievm_core.errors import AuthenticationError, ConfigError, ProviderError
from genievm_core.logging import get_logger
from genievm_vmware.options import VMwareOptions

__all__ = [
    "Endpoint",
    "connect",
    "disconnect",
    "endpoint",
    "fault_message",
    "raise_for",
    "session_cookie",
    "vsphere_errors",
    "wait",
]

log = get_logger("genievm.vmware")
PASSWORD_ENV = "GENIEVM_VMWARE_PASSWORD"
USER_ENV = "GENIEVM_VMWARE_USER"


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to log in. ``password`` stays out of ``repr``."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    ca_file: Path | None = None
    insecure: bool = False

    @property
    def where(self) -> str:
        return self.host if self.port == 443 else f"{self.host}:{self.port}"


def endpoint(options: VMwareOptions, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The endpoint the provider options name (``host``, ``port``, ``user``, ``caFile``, ``insecure``)."""
    env = os.environ if environ is None else environ
    raw = (options.host or env.get("GENIEVM_VMWARE_HOST") or "").strip()
    if not raw:
        raise ConfigError("invalid providerOptions: host: give the vCenter or ESXi host (-o host=vcenter.example.com)")
    parsed = urlparse(raw if "//" in raw else f"//{raw}")
    host = parsed.hostname or ""
    try:
        port = options.port or parsed.port or 443
    except ValueError:
        raise ConfigError(f"invalid providerOptions: host: {raw!r} has no valid port") from None
    user = options.user or env.get(USER_ENV) or ""
    if not user:
        raise ConfigError(f"invalid providerOptions: user: give the vSphere user (-o user=NAME or {USER_ENV})")
    if options.ca_file is not None and not options.ca_file.is_file():
        raise ConfigError(f"invalid providerOptions: caFile: {options.ca_file} is not a file")
    return Endpoint(host, port, user, _password(options, env, user, host), options.ca_file, options.insecure)


def _password(options: VMwareOptions, env: Mapping[str, str], user: str, host: str) -> str:
    if options.password is not None and options.password.get_secret_value():
        return options.password.get_secret_value()
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    if options.password_file is not None:
        path = options.password_file
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"invalid providerOptions: passwordFile: cannot read {path}: {exc.strerror}") from exc
    if sys.stdin.isatty():
        return getpass.getpass(f"vSphere password for {user}@{host}: ")
    raise ConfigError(
        f"invalid providerOptions: password: set {PASSWORD_ENV}, -o passwordFile=PATH, or run on a terminal"
    )


def ssl_context(ep: Endpoint) -> ssl.SSLContext:
    """Verified TLS (system CAs, or ``caFile`` alone when given); no verification only with ``insecure``."""
    if ep.insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(ep.ca_file) if ep.ca_file else None)


def connect(ep: Endpoint) -> vim.ServiceInstance:
    """Log in; one clear error for a wrong password, an untrusted certificate or an unreachable host."""
    if ep.insecure:
        log.warning("vmware.tls_unverified", host=ep.host, reason="insecure=true")
    try:
        si = SmartConnect(host=ep.host, port=ep.port, user=ep.user, pwd=ep.password, sslContext=ssl_context(ep))
    except vim.fault.InvalidLogin as exc:
        raise AuthenticationError(f"authentication failed for {ep.user} at {ep.where}") from exc
    except ssl.SSLCertVerificationError as exc:
        raise ProviderError(
            f"provider vmware: cannot connect to {ep.where}: its TLS certificate is not trusted "
            f"({exc.verify_message}); give -o caFile=PATH, or -o insecure=true to skip verification"
        ) from exc
    except vmodl.MethodFault as exc:
        raise_for(exc, f"cannot log in to {ep.where}")
    except OSError as exc:
        raise ProviderError(f"provider vmware: cannot connect to {ep.where}: {exc.strerror or exc}") from exc
    log.info("vmware.connected", host=ep.where, user=ep.user, api=si.content.about.apiVersion)
    service: vim.ServiceInstance = si
    return service


def disconnect(si: vim.ServiceInstance) -> None:
    """Log out (a session left open counts against vCenter's session limit)."""
    try:
        Disconnect(si)
    except (vmodl.MethodFault, OSError) as exc:
        log.warning("vmware.logout_failed", error=fault_message(exc))


def session_cookie(si: vim.ServiceInstance) -> str:
    """The ``vmware_soap_session=...`` cookie of the login, for the datastore's ``/folder`` URLs."""
    cookie = str(si._stub.cookie or "")
    return cookie.split(";", 1)[0].strip()


def fault_message(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None) or getattr(exc, "faultMessage", None) or str(exc)
    if not isinstance(msg, str) or not msg.strip():
        msg = type(exc).__name__.rsplit(".", 1)[-1]
    return " ".join(msg.split())


def raise_for(exc: BaseException, what: str) -> NoReturn:
    """Re-raise a vSphere fault as the GenieVM error that says what went wrong, on one line."""
    kind = type(exc).__name__.rsplit(".", 1)[-1]
    if isinstance(exc, vim.fault.NoPermission):
        raise ProviderError(f"provider vmware: {what}: permission denied ({exc.privilegeId})") from exc
    if isinstance(exc, vim.fault.NotAuthenticated):
        raise AuthenticationError(f"provider vmware: {what}: the session is no longer authenticated") from exc
    raise ProviderError(f"provider vmware: {what}: {fault_message(exc)} ({kind})") from exc


@contextmanager
def vsphere_errors(what: str) -> Iterator[None]:
    try:
        yield
    except vmodl.MethodFault as exc:
        raise_for(exc, what)


def wait(task: vim.Task, what: str) -> Any:
    """Wait for ``task``; its result, or its fault as a ProviderError."""
    try:
        WaitForTask(task)
    except vmodl.MethodFault as exc:
        raise_for(exc, what)
    return task.info.result
