"""The VM's host, where disk images are: this one, or a remote one reached over SSH.

A ``qemu+ssh://`` URI names the remote host, its SSH user, port and key (``?keyfile=``,
``?known_hosts=``, ``?no_verify=1``, as libvirt reads them). GenieVM runs its own ``ssh`` with
the same settings for what libvirt's API does not do: ``qemu-img`` on the images, and
``qemu-nbd`` serving one, whose unix socket ``ssh -L`` forwards to this host (the data
crosses the network inside SSH).

An SSH password (``GENIEVM_KVM_SSH_PASSWORD``, or ``sshPasswordFile``) reaches ``ssh``, libvirt's
and GenieVM's, through ``SSH_ASKPASS``: a helper that fetches it from this process when
``ssh`` asks for a password (:class:`Askpass`), and answers nothing else. It is never in an argument list,
a log, or the repository.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from genievm_core.errors import AuthenticationError, ConfigError, ProviderError
from genievm_kvm.nbd_export import qemu_nbd, qemu_nbd_argv

__all__ = ["Askpass", "Host", "LocalHost", "SSHHost", "host_for", "ssh_password"]

PASSWORD_ENV = "GENIEVM_KVM_SSH_PASSWORD"
_ASKPASS = """#!{python}
import socket, sys
prompt = sys.argv[1] if len(sys.argv) > 1 else ""
if "password" not in prompt.lower():
    sys.exit(1)  # a host key question, a key's passphrase: not ours to answer
with socket.socket(socket.AF_UNIX) as s:
    s.connect({socket!r})
    sys.stdout.write(s.makefile().read())
"""


class Askpass:
    """An ``SSH_ASKPASS`` helper that gets the password from this process, over a unix socket.

    libvirt gives the ``ssh`` it runs only a few variables (``SSH_ASKPASS`` and ``DISPLAY`` among
    them, with which ``ssh`` asks the helper), so the password cannot travel in the environment;
    the socket is in a folder only this user can enter.
    """

    def __init__(self, password: str, run_dir: Path) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="askpass-", dir=run_dir))  # mode 0700
        self.socket_path = self.folder / "sock"
        self.helper = self.folder / "askpass"
        self.helper.write_text(_ASKPASS.format(python=sys.executable, socket=str(self.socket_path)))
        self.helper.chmod(0o700)
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(str(self.socket_path))
        self._server.listen(4)
        self._answer = (password + "\n").encode()
        threading.Thread(target=self._serve, name="genievm-askpass", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            with conn:
                conn.sendall(self._answer)

    @property
    def env(self) -> dict[str, str]:
        """For ``ssh`` run by GenieVM."""
        return {
            "SSH_ASKPASS": str(self.helper),
            "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": os.environ.get("DISPLAY", ":0"),
        }

    @contextmanager
    def for_libvirt(self) -> Iterator[None]:
        """For the ``ssh`` libvirt runs while the block connects (it passes only ``SSH_ASKPASS`` and ``DISPLAY``)."""
        saved = {k: os.environ.get(k) for k in ("SSH_ASKPASS", "DISPLAY")}
        os.environ["SSH_ASKPASS"] = str(self.helper)
        os.environ.setdefault("DISPLAY", ":0")  # without a terminal, ssh asks SSH_ASKPASS only when DISPLAY is set
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def close(self) -> None:
        self._server.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def ssh_password(password_file: Path | None) -> str | None:
    """The SSH password: the first line of ``sshPasswordFile``, or ``GENIEVM_KVM_SSH_PASSWORD``; else None (keys)."""
    if password_file is None:
        return os.environ.get(PASSWORD_ENV) or None
    try:
        lines = password_file.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(
            f"invalid providerOptions: sshPasswordFile: cannot read {password_file}: {exc.strerror}"
        ) from exc
    if not lines or not lines[0]:
        raise ConfigError(f"invalid providerOptions: sshPasswordFile: {password_file} is empty")
    return lines[0]


class Host:
    """The VM's host: commands on it, its files, and ``qemu-nbd`` serving an image there."""

    remote = False
    run_dir: Path  # this host's folder for NBD sockets

    def serve_image(
        self, image: Path, fmt: str, *, export: str, read_only: bool = True, bitmap: str | None = None
    ) -> AbstractContextManager[Path]:
        """``image`` served by ``qemu-nbd`` for the block, at a unix socket here."""
        sock = self.run_dir / f"{secrets.token_hex(4)}.sock"
        return qemu_nbd(image, fmt, sock, export=export, read_only=read_only, bitmap=bitmap)

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True)

    def exists(self, path: Path) -> bool:
        return path.exists()

    def is_block(self, path: Path) -> bool:
        return path.is_block_device()

    def mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def rename(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)


class LocalHost(Host):
    """This host."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir


@dataclass
class SSHHost(Host):
    """A remote host, as a ``qemu+ssh://`` URI names it."""

    host: str
    user: str | None = None
    port: int | None = None
    options: list[str] = field(default_factory=list)  # ssh -i/-o arguments from the URI
    env: Mapping[str, str] = field(default_factory=dict)  # Askpass.env, for a password
    run_dir: Path = Path("/tmp")  # this host's, for the forwarded sockets

    remote = True

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_argv(self, *extra: str) -> list[str]:
        argv = ["ssh", "-T", "-o", "LogLevel=ERROR", "-o", f"BatchMode={'no' if self.env else 'yes'}"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        return [*argv, *self.options, *extra, self.host, "--"]

    def _environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.ssh_argv(), shlex.join(argv)], capture_output=True, text=True, env=self._environ())
        if proc.returncode == 255:  # ssh's own failure, not the command's
            self._ssh_failed(proc.stderr)
        return proc

    def _ssh_failed(self, stderr: str) -> None:
        message = "; ".join(ln.strip() for ln in stderr.splitlines() if ln.strip()) or "ssh failed"
        if "Permission denied" in message:
            raise AuthenticationError(f"provider kvm: ssh to {self.where}: authentication failed: {message}")
        raise ProviderError(f"provider kvm: ssh to {self.where}: {message}")

    def _check(self, argv: list[str], what: str) -> str:
        proc = self.run(argv)
        if proc.returncode != 0:
            raise ProviderError(f"provider kvm: {what} on {self.host}: {proc.stderr.strip() or proc.returncode}")
        return proc.stdout

    def exists(self, path: Path) -> bool:
        return self.run(["test", "-e", str(path)]).returncode == 0

    def is_block(self, path: Path) -> bool:
        return self.run(["test", "-b", str(path)]).returncode == 0

    def mkdir(self, path: Path) -> None:
        self._check(["mkdir", "-p", str(path)], f"creating {path}")

    def rename(self, source: Path, target: Path) -> None:
        self._check(["mv", "-f", str(source), str(target)], f"renaming {source}")

    def unlink(self, path: Path) -> None:
        self._check(["rm", "-f", str(path)], f"removing {path}")

    def serve_image(
        self, image: Path, fmt: str, *, export: str, read_only: bool = True, bitmap: str | None = None
    ) -> AbstractContextManager[Path]:
        return self._serve(qemu_nbd_argv(image, fmt, export=export, read_only=read_only, bitmap=bitmap))

    @contextmanager
    def _serve(self, qemu_nbd: list[str]) -> Iterator[Path]:
        """Run ``qemu_nbd`` (its argv without ``-k``) on the host; yield a local socket forwarded to it.

        The remote shell stops qemu-nbd when its input ends: when this block ends, or when
        this process dies and ssh with it.
        """
        tag = secrets.token_hex(4)
        folder, local = f"/tmp/genievm-nbd-{tag}", self.run_dir / f"fwd-{tag}.sock"
        remote = f"{folder}/nbd.sock"
        # --fork: qemu-nbd returns once it listens (a socket file alone may still refuse a connection)
        serve = shlex.join([*qemu_nbd, "-k", remote, "--fork", f"--pid-file={folder}/pid"])
        script = (
            f"umask 077; mkdir {folder} || exit 1; {serve} || {{ rm -rf {folder}; exit 3; }}; "
            f"echo ready; read _; pid=$(cat {folder}/pid); kill $pid; "
            f"while kill -0 $pid 2>/dev/null; do sleep 0.05; done; rm -rf {folder}"
        )
        forward = ["-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes", "-L", f"{local}:{remote}"]
        proc = subprocess.Popen(
            [*self.ssh_argv(*forward), script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self._environ(),
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            if proc.stdout.readline().strip() != "ready":
                proc.wait()
                err = proc.stderr.read()
                if proc.returncode == 255:
                    self._ssh_failed(err)
                lines = err.strip().splitlines()
                raise ProviderError(
                    f"provider kvm: qemu-nbd on {self.host} cannot serve {qemu_nbd[-1]}: "
                    f"{lines[-1] if lines else proc.returncode}"
                )
            yield local
        finally:
            if proc.poll() is None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.close()  # the remote shell's `read` ends: qemu-nbd is stopped
                    proc.wait(30)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
            local.unlink(missing_ok=True)


def host_for(uri: str, run_dir: Path, askpass: Askpass | None = None) -> Host:
    """The host of ``uri``'s VMs: an :class:`SSHHost` for ``qemu+ssh://``, else this host.

    Other remote transports (``qemu+tls://``, ``qemu+tcp://``) give no way to run commands
    there; what needs that says so (``ProviderError``).
    """
    parsed = urlparse(uri)
    if not parsed.hostname:
        return LocalHost(run_dir)
    if "+ssh" not in parsed.scheme:
        raise ProviderError(
            f"provider kvm: a {parsed.scheme}:// connection cannot reach the disk images on {parsed.hostname}; "
            "use qemu+ssh://, or run GenieVM on that host"
        )
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    options: list[str] = []
    if query.get("keyfile"):
        options += ["-i", query["keyfile"], "-o", "IdentitiesOnly=yes"]
    if query.get("known_hosts"):
        options += ["-o", f"UserKnownHostsFile={query['known_hosts']}"]
    if query.get("no_verify") == "1":
        options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    return SSHHost(parsed.hostname, parsed.username, parsed.port, options, askpass.env if askpass else {}, run_dir)
