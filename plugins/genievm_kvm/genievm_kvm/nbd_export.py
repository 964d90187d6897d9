"""Reading and writing disks over NBD (libnbd), and ``qemu-nbd`` servers for images not in use.

libnbd's Python binding comes from Debian's python3-libnbd (scripts/setup.sh links it into the
virtual environment); it is imported lazily so that listing VMs works without it.
"""

from __future__ import annotations

import os
import queue
import socket as sock
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genievm_core.errors import ProviderError
from genievm_core.models.extents import Extent, clip
from genievm_kvm.errors import TransportSecurityError

__all__ = ["ALLOCATION", "READERS", "Address", "NBDClient", "qemu_nbd", "qemu_nbd_argv"]

ALLOCATION = "base:allocation"
_STATE_ZERO = 2  # base:allocation: the range reads as zeros
_DIRTY = 1  # qemu:dirty-bitmap:*: the range was written
_MAX_REQUEST = 32 << 20  # qemu's NBD server refuses larger requests
# Reads are asked for in pieces this large: QEMU's NBD server spent twice the CPU on 4 MiB requests as on
# 1 MiB ones for the same bytes (fresh pages for each larger buffer), more than joining the pieces costs here
_READ_REQUEST = 1 << 20
_MAX_STATUS = 1 << 30
READERS = 4  # extra connections a backup's chunks are read over at once (where the server allows multi-conn)


def _nbd() -> Any:
    try:
        import nbd
    except ImportError as exc:
        raise ProviderError(
            "provider kvm: libnbd's Python binding is missing (install python3-libnbd; scripts/setup.sh links it)"
        ) from exc
    return nbd


Address = Path | tuple[str, int]  # a unix socket here, or (host, port) of a TCP server


class NBDClient:
    """One NBD export, over a unix socket or TCP: one connection, and ``readers`` more where allowed."""

    def __init__(
        self,
        address: Address,
        export: str,
        contexts: tuple[str, ...] = (ALLOCATION,),
        tls_dir: Path | None = None,
        *,
        readers: int = 0,
    ) -> None:
        """``tls_dir``: TLS required, with the CA and client certificates there (``ca-cert.pem``,
        ``client-cert.pem``, ``client-key.pem``); the server's certificate must name its host. ``readers``: extra
        connections for reads from several threads at once, when the server allows several (multi-conn)."""
        nbd = _nbd()
        self.contexts = contexts
        self.export = export
        self._error = nbd.Error
        self._readers: list[Any] = []
        self._tls_dir = tls_dir
        self._free: queue.SimpleQueue[Any | None] = queue.SimpleQueue()  # connections no pread holds; None: closed
        try:
            self._h = self._connect(nbd, address, contexts)
            self.size: int = self._h.get_size()
            if readers > 1 and self._h.can_multi_conn():
                self._readers = [self._connect(nbd, address, ()) for _ in range(readers)]
            for h in [self._h, *self._readers]:
                self._free.put(h)
        except nbd.Error as exc:
            self.close()
            if tls_dir is not None and ("tls" in exc.string.lower() or "certificate" in exc.string.lower()):
                raise TransportSecurityError(
                    f"provider kvm: NBD over TLS to {address[0] if isinstance(address, tuple) else address}: "
                    f"{exc.string} (check the certificates in {tls_dir} and the server's)"
                ) from exc
            raise ProviderError(f"provider kvm: NBD export {export} at {address}: {exc.string}") from exc

    def _connect(self, nbd: Any, address: Address, contexts: tuple[str, ...]) -> Any:
        h = nbd.NBD()
        if self._tls_dir is not None:
            h.set_tls(nbd.TLS_REQUIRE)
            h.set_tls_certificates(str(self._tls_dir))
            h.set_tls_verify_peer(True)
        h.set_pread_initialize(False)  # no memset of every buffer before it is read into (a failed read raises)
        for ctx in contexts:
            h.add_meta_context(ctx)
        h.set_export_name(self.export)
        if isinstance(address, tuple):
            h.connect_tcp(address[0], str(address[1]))
        else:
            h.connect_unix(str(address))
        return h

    @property
    def connections(self) -> int:
        """How many connections this client reads through (1, or 1 and the extra readers)."""
        return 1 + len(self._readers)

    def has_context(self, ctx: str) -> bool:
        return bool(self._h.can_meta_context(ctx))

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``, on a connection no other ``pread`` holds: safe from several threads,
        whose reads then go over several connections at once (``connections``), each one request."""
        h = self._free.get()
        try:
            if h is None:  # closed: a read now would wait for ever
                raise ProviderError(f"provider kvm: reading {self.export} at {offset}: the NBD client is closed")
            return self._read_on(h, offset, length)
        finally:
            self._free.put(h)

    def _read_on(self, h: Any, offset: int, length: int) -> bytes:
        try:
            if length <= _READ_REQUEST:
                return bytes(h.pread(length, offset))
            parts = [(min(_READ_REQUEST, length - pos), offset + pos) for pos in range(0, length, _READ_REQUEST)]
            return b"".join([h.pread(n, at) for n, at in parts])
        except self._error as exc:
            raise ProviderError(f"provider kvm: reading {self.export} at {offset}: {exc.string}") from exc

    def pwrite(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            for pos in range(0, len(view), _MAX_REQUEST):
                self._h.pwrite(view[pos : pos + _MAX_REQUEST], offset + pos)
        except self._error as exc:
            raise ProviderError(f"provider kvm: writing {self.export} at {offset}: {exc.string}") from exc

    def flush(self) -> None:
        try:
            self._h.flush()
        except self._error as exc:
            raise ProviderError(f"provider kvm: flushing {self.export}: {exc.string}") from exc

    def extents(self, ctx: str, *, flag: int, present: bool) -> list[Extent]:
        """The ranges whose status in ``ctx`` has ``flag`` set (``present``) or clear."""
        found: list[Extent] = []
        reached = [0]  # how far the server's replies for ``ctx`` have covered the disk

        def collect(meta: str, start: int, entries: list[int], err: Any) -> int:
            if meta == ctx:
                pos = start
                for length, flags in zip(entries[0::2], entries[1::2], strict=True):
                    if bool(flags & flag) == present:
                        found.append(Extent(pos, length))
                    pos += length
                reached[0] = max(reached[0], pos)
            return 0

        while reached[0] < self.size:
            offset = reached[0]
            try:
                self._h.block_status(min(self.size - offset, _MAX_STATUS), offset, collect)
            except self._error as exc:
                raise ProviderError(f"provider kvm: block status of {self.export}: {exc.string}") from exc
            if reached[0] <= offset:
                raise ProviderError(f"provider kvm: NBD server sent no {ctx} status for {self.export} at {offset}")
        return clip(found, self.size)

    def allocated(self) -> list[Extent]:
        """Ranges that may hold data (everything that does not read as zeros)."""
        return self.extents(ALLOCATION, flag=_STATE_ZERO, present=False)

    def dirty(self, ctx: str) -> list[Extent]:
        return self.extents(ctx, flag=_DIRTY, present=True)

    def close(self) -> None:
        for h in [getattr(self, "_h", None), *self._readers]:
            try:
                if h is not None:
                    h.shutdown()
            except self._error:
                pass  # the server may be gone already (backup job aborted)
        self._h = None  # libnbd 1.14 has no close(): the handles close when collected
        self._readers = []
        while not self._free.empty():  # let go of the handles, and let a late pread fail at once
            self._free.get_nowait()
        self._free.put(None)


def qemu_nbd_argv(
    image: Path,
    fmt: str,
    *,
    export: str,
    read_only: bool = True,
    bitmap: str | None = None,
    snapshot: str | None = None,
    force_share: bool = False,
) -> list[str]:
    """``qemu-nbd`` serving ``image`` (without ``-k SOCKET``); the image's path comes last."""
    cmd = ["qemu-nbd", "--persistent", "--shared=8", "-x", export]
    cmd += ["--cache=none", "--aio=native"] if read_only else ["--cache=writeback", "--discard=unmap"]
    if read_only:
        cmd.append("--read-only")
    if bitmap:
        cmd += ["-B", bitmap]
    if snapshot:
        cmd += ["-l", f"snapshot.name={snapshot}"]
    if force_share:  # only through --image-opts; commas in the path are doubled as QEMU's syntax wants
        path = str(image).replace(",", ",,")
        return [*cmd, "--image-opts", f"driver={fmt},file.driver=file,file.filename={path},force-share=on,read-only=on"]
    return [*cmd, "-f", fmt, str(image)]


@contextmanager
def qemu_nbd(
    image: Path,
    fmt: str,
    socket: Path,
    *,
    export: str,
    read_only: bool = True,
    bitmap: str | None = None,
    snapshot: str | None = None,
    force_share: bool = False,
) -> Iterator[Path]:
    """Serve ``image`` on ``socket`` with ``qemu-nbd`` for the block; always stopped and the socket removed.

    ``qemu-nbd`` takes the image's lock, so a VM cannot start on it meanwhile (and it refuses
    to open an image a running VM holds, unless ``force_share`` for a read-only snapshot).
    """
    args = qemu_nbd_argv(
        image, fmt, export=export, read_only=read_only, bitmap=bitmap, snapshot=snapshot, force_share=force_share
    )
    cmd = [*args[:1], "-k", str(socket), *args[1:]]
    socket.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _accepting(socket):  # the socket file exists from bind(), a moment before listen()
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
                raise ProviderError(
                    f"provider kvm: qemu-nbd cannot serve {image}: {err[-1] if err else proc.returncode}"
                )
            if time.monotonic() > deadline:
                raise ProviderError(f"provider kvm: qemu-nbd did not start serving {image} within 30 s")
            time.sleep(0.01)
        yield socket
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
        socket.unlink(missing_ok=True)


def _accepting(path: Path) -> bool:
    """Whether a server listens on the unix socket ``path`` (a connection is made and closed at once)."""
    probe = sock.socket(sock.AF_UNIX, sock.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    finally:
        probe.close()
    return True


def socket_dir(workdir: Path | None) -> Path:
    base = workdir or Path(os.environ.get("XDG_RUNTIME_DIR", "/run"))
    folder = base / "genievm"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder
