"""qcow2 files from raw ones, with ``qemu-img`` (Debian: qemu-utils): how the image provider restores qcow2."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from genievm_core.errors import ProviderError

__all__ = ["require_qemu_img", "to_qcow2"]


def require_qemu_img(disk: str) -> str:
    """The path of ``qemu-img``; raises, before anything is written, when it is not installed."""
    found = shutil.which("qemu-img")
    if found is None:
        raise ProviderError(
            f"provider image: disk {disk}: writing qcow2 needs qemu-img (Debian package qemu-utils), which is not "
            "installed; restore it as raw, or install qemu-img"
        )
    return found


def to_qcow2(raw: Path, qcow2: Path) -> None:
    """Write ``qcow2`` from the sparse raw image ``raw`` (holes and zeros stay unallocated), compare the two, and
    flush it."""
    exe = require_qemu_img(raw.name)
    steps = (
        [exe, "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
        [exe, "compare", "-q", "-f", "raw", "-F", "qcow2", str(raw), str(qcow2)],
    )
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=None, check=False)
        except OSError as exc:
            raise ProviderError(f"provider image: cannot run qemu-img: {exc.strerror}") from exc
        if done.returncode != 0:
            qcow2.unlink(missing_ok=True)
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise ProviderError(f"provider image: qemu-img {step[1]} of {raw.name} to qcow2 failed: {why}")
    fd = os.open(qcow2, os.O_RDONLY)  # qemu-img convert flushes nothing: the qcow2 durable before its rename
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
