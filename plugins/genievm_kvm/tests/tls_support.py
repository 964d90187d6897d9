"""x509 certificates for NBD over TLS in the remote tests, made with ``certtool`` (gnutls-bin).

libvirt's QEMU driver takes a backup job's server certificates from qemu.conf's
``backup_tls_x509_cert_dir``, by default its ``default_tls_x509_cert_dir``, by default
``/etc/pki/qemu``, a setting of the running daemon that tests cannot change for themselves
alone. So the first test run puts a test CA (``genievm-test-ca-key.pem`` marks it as
these tests') and a server certificate for 127.0.0.1 there, once, under a lock; every
test then signs its own client certificate with that CA. Nothing else on this machine uses
that folder unless it asks for TLS; one holding certificates not made here is left alone
(the test is skipped and says why).
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CA_KEY = "genievm-test-ca-key.pem"
_QEMU_CONF = Path("/etc/libvirt/qemu.conf")


def libvirt_tls_dir() -> Path:
    """The folder libvirt reads a backup job's server certificates from."""
    found: dict[str, str] = {}
    text = _QEMU_CONF.read_text() if _QEMU_CONF.exists() else ""
    for key, value in re.findall(r'^\s*((?:backup|default)_tls_x509_cert_dir)\s*=\s*"([^"]*)"', text, re.M):
        found[key] = value
    return Path(found.get("backup_tls_x509_cert_dir") or found.get("default_tls_x509_cert_dir") or "/etc/pki/qemu")


def _certtool(*args: str, template: str, folder: Path) -> None:
    info = folder / "template.info"
    info.write_text(template)
    subprocess.run(["certtool", *args, "--template", str(info)], check=True, capture_output=True)
    info.unlink()


def _key(path: Path) -> None:
    subprocess.run(["certtool", "--generate-privkey", "--outfile", str(path)], check=True, capture_output=True)
    path.chmod(0o600)


def _signed(folder: Path, name: str, ca: Path, template: str) -> None:
    _key(folder / f"{name}-key.pem")
    _certtool(
        "--generate-certificate",
        "--load-privkey", str(folder / f"{name}-key.pem"),
        "--load-ca-certificate", str(ca / "ca-cert.pem"),
        "--load-ca-privkey", str(ca / CA_KEY),
        "--outfile", str(folder / f"{name}-cert.pem"),
        template=template,
        folder=folder,
    )  # fmt: skip


def certificate_authority(folder: Path) -> Path:
    """A new CA in ``folder`` (``ca-cert.pem`` and its key)."""
    folder.mkdir(parents=True, exist_ok=True)
    _key(folder / CA_KEY)
    _certtool(
        "--generate-self-signed", "--load-privkey", str(folder / CA_KEY), "--outfile", str(folder / "ca-cert.pem"),
        template="cn = GenieVM test CA\nca\ncert_signing_key\nexpiration_days = 3650\n",
        folder=folder,
    )  # fmt: skip
    return folder


def server_certificates() -> Path:
    """libvirt's server certificate folder, holding the tests' CA and a server certificate for 127.0.0.1."""
    if shutil.which("certtool") is None:
        pytest.skip("certtool is not installed (scripts/setup.sh installs gnutls-bin)")
    folder = libvirt_tls_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".genievm-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / CA_KEY).exists():
            return folder
        if (folder / "server-cert.pem").exists():
            pytest.skip(f"{folder} holds server certificates not made by these tests; they are left alone")
        certificate_authority(folder)
        server = "cn = 127.0.0.1\nip_address = 127.0.0.1\ndns_name = localhost\ntls_www_server\n"
        _signed(folder, "server", folder, server + "encryption_key\nsigning_key\nexpiration_days = 3650\n")
    return folder


def client_certificates(server: Path, folder: Path) -> Path:
    """``folder`` with the CA certificate and a client certificate it signed, as ``tlsDir`` wants them."""
    folder.mkdir()
    shutil.copy(server / "ca-cert.pem", folder / "ca-cert.pem")
    client = "cn = genievm test client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 30\n"
    _signed(folder, "client", server, client)
    return folder
