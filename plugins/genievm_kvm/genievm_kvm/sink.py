"""Disks being restored: a new image (qcow2, or raw on a remote host) written through ``qemu-nbd``."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from genievm_core.builtin.image import PARTIAL
from genievm_core.errors import ProviderError
from genievm_kvm.nbd_export import NBDClient
from genievm_kvm.remote import Host

__all__ = ["NBDImageSink"]


class NBDImageSink:
    """A new sparse image on ``host`` under a partial name, renamed into place by the restore's commit."""

    def __init__(self, final: Path, size: int, fmt: str, host: Host) -> None:
        self.final = final
        self.path = final.with_name(final.name + PARTIAL)
        self.host = host
        host.mkdir(final.parent)
        options = ["-o", "preallocation=off"] if fmt == "qcow2" else []
        proc = host.run(["qemu-img", "create", "-q", "-f", fmt, *options, str(self.path), str(size)])
        if proc.returncode != 0:
            raise ProviderError(f"provider kvm: cannot create {final}: {proc.stderr.strip()}")
        self._stack = ExitStack()
        try:
            sock = self._stack.enter_context(host.serve_image(self.path, fmt, export="restore", read_only=False))
            self._client = NBDClient(sock, "restore", ())
        except BaseException:
            self._stack.close()
            host.unlink(self.path)
            raise
        self._open = True

    @property
    def zeroed(self) -> bool:
        return True  # a new image reads as zeros where nothing was written

    def write(self, offset: int, data: bytes) -> None:
        self._client.pwrite(offset, data)

    def read(self, offset: int, length: int) -> bytes:
        return self._client.pread(offset, length)

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._client.flush()
            finally:
                self._client.close()
                self._stack.close()
