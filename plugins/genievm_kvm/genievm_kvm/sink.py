"""Disks being restored: a new qcow2 image written through ``qemu-nbd``."""

from __future__ import annotations

import secrets
import subprocess
from contextlib import ExitStack
from pathlib import Path

from genievm_core.builtin.image import PARTIAL
from genievm_core.errors import ProviderError
from genievm_kvm.nbd_export import NBDClient, qemu_nbd

__all__ = ["Qcow2DiskSink"]


class Qcow2DiskSink:
    """A new sparse qcow2 image under a partial name, renamed into place by ``commit``."""

    def __init__(self, final: Path, size: int, run_dir: Path) -> None:
        self.final = final
        self.path = final.with_name(final.name + PARTIAL)
        final.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=off", str(self.path), str(size)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ProviderError(f"provider kvm: cannot create {final}: {proc.stderr.strip()}")
        self._stack = ExitStack()
        try:
            sock = self._stack.enter_context(
                qemu_nbd(
                    self.path, "qcow2", run_dir / f"{secrets.token_hex(4)}.sock", export="restore", read_only=False
                )
            )
            self._client = NBDClient(sock, "restore", ())
        except BaseException:
            self._stack.close()
            self.path.unlink(missing_ok=True)
            raise
        self._open = True

    @property
    def zeroed(self) -> bool:
        return True  # a new qcow2 image reads as zeros where nothing was written

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
