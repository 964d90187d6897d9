"""Fixtures for the KVM plugin's tests: real libvirtd, real QEMU/KVM, real qcow2 images.

- ``libvirt_conn``: a connection to ``qemu:///system``; libvirtd is started with
  ``scripts/services/libvirtd.sh`` when it is not running (root only).
- ``make_vm(disks=..., running=True)``: a VM (see ``genievm_kvm.testing``) started paused
  (backups work on a paused VM); destroyed and undefined after the test.
- ``cli(*args)``: the installed ``genievm`` console script in a subprocess.
- ``repo``: a new encrypted repository with 1 MiB chunks.
- ``ssh_uri``: a ``qemu+ssh://`` URI to this host's libvirtd through a private sshd.
- ``ssh_password_uri``: the same, logging in with a password, and that password.
- ``nbd_tls_dir``: a ``tlsDir`` whose client certificate this host's libvirt trusts (``tls_support``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")
sys.path.insert(0, str(Path(__file__).parent))

from genievm_kvm.testing import remove_vm, scratch_domain_xml  # noqa: E402
from kvm_support import PASSPHRASE, URI, CLIResult, TestVM, create_images  # noqa: E402
from tls_support import client_certificates, server_certificates  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _own_job_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test's jobs go to a registry of its own (subprocesses inherit it), not the machine's."""
    monkeypatch.setenv("GENIEVM_JOB_DB", str(tmp_path / "jobs.sqlite"))


@pytest.fixture(scope="session")
def libvirt_conn() -> Iterator[libvirt.virConnect]:
    if shutil.which("libvirtd") is None:
        pytest.skip("libvirtd is not installed (scripts/setup.sh installs it)")
    if os.geteuid() != 0:
        pytest.skip("the KVM tests start VMs through qemu:///system, which needs root here")
    subprocess.run(["bash", str(ROOT / "scripts/services/libvirtd.sh")], check=True)
    conn = libvirt.open(URI)
    yield conn
    conn.close()


@pytest.fixture
def make_vm(libvirt_conn: libvirt.virConnect, tmp_path: Path) -> Iterator[Callable[..., TestVM]]:
    made: list[libvirt.virDomain] = []

    def make(disks: dict[str, tuple[int, str]] | None = None, running: bool = True, random_mib: int = 0) -> TestVM:
        name = f"genievm-test-{secrets.token_hex(3)}"
        default = {"vda": (64 << 20, "qcow2"), "vdb": (32 << 20, "qcow2")}
        images = create_images(tmp_path, name, disks or default, random_mib)
        dom = libvirt_conn.defineXML(scratch_domain_xml(name, images))
        made.append(dom)
        if running:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        return TestVM(dom, name, {t: p for t, (p, _) in images.items()}, {t: f for t, (_, f) in images.items()})

    yield make
    for dom in made:
        remove_vm(dom)


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., CLIResult]:
    exe = Path(sys.executable).with_name("genievm")
    env = {**os.environ, "GENIEVM_PASSPHRASE": PASSPHRASE}

    def run(*args: str, check: bool = True, extra_env: dict[str, str] | None = None) -> CLIResult:
        proc = subprocess.run(
            [str(exe), *args], capture_output=True, text=True, env={**env, **(extra_env or {})}, cwd=tmp_path
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"genievm {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def repo(cli: Callable[..., CLIResult], tmp_path: Path) -> str:
    path = tmp_path / "repo"
    cli("repo", "init", str(path), "--chunk-size", str(1 << 20))
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _sshd(folder: Path, extra: str = "") -> Iterator[int]:
    """A private sshd on 127.0.0.1 (its keys and config in ``folder``), its port; stopped after."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        pytest.skip("sshd is not installed (scripts/setup.sh installs openssh-server)")
    folder.mkdir()
    for key in ("client", "host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    (folder / "authorized_keys").write_text((folder / "client.pub").read_text())
    port = _free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\n"
        f"AuthorizedKeysFile {folder}/authorized_keys\nStrictModes no\nUsePAM no\n"
        f"PidFile {folder / 'sshd.pid'}\n{extra}"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(folder / "sshd_config")], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "sshd did not start"
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait()


@pytest.fixture
def ssh_uri(libvirt_conn: libvirt.virConnect, tmp_path: Path) -> Iterator[str]:
    """``qemu+ssh://root@127.0.0.1:PORT/system`` through a private sshd with a key made for the test."""
    folder = tmp_path / "ssh"
    with _sshd(folder, "PermitRootLogin prohibit-password\nPasswordAuthentication no\n") as port:
        yield f"qemu+ssh://root@127.0.0.1:{port}/system?keyfile={folder / 'client'}&no_verify=1"


@pytest.fixture
def ssh_password_uri(libvirt_conn: libvirt.virConnect, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A ``qemu+ssh://`` URI that logs in with a password (no key), and that password.

    sshd checks passwords against /etc/shadow: the test adds a user of its own, an alias of
    root (uid 0, so that it may use qemu:///system), with a random password; removed after.
    """
    user, password = f"gvmpw{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    subprocess.run(
        ["useradd", "-o", "-u", "0", "-g", "0", "-M", "-d", str(tmp_path), "-s", "/bin/sh", user], check=True
    )
    try:
        subprocess.run(["chpasswd"], input=f"{user}:{password}", text=True, check=True)
        extra = f"PermitRootLogin yes\nPasswordAuthentication yes\nPubkeyAuthentication no\nAllowUsers {user}\n"
        with _sshd(tmp_path / "ssh", extra) as port:
            yield f"qemu+ssh://{user}@127.0.0.1:{port}/system?no_verify=1", password
    finally:
        subprocess.run(["userdel", "-f", user], check=False)


@pytest.fixture(scope="session")
def libvirt_server_certificates(libvirt_conn: libvirt.virConnect) -> Path:
    return server_certificates()


@pytest.fixture
def nbd_tls_dir(libvirt_server_certificates: Path, tmp_path: Path) -> Path:
    """A ``tlsDir`` for NBD over TLS to this host's libvirt: the tests' CA and a client certificate."""
    return client_certificates(libvirt_server_certificates, tmp_path / "tls")


@pytest.fixture
def free_port() -> int:
    return _free_port()
