"""Early writeback for restored disks.

A restore must end with the data on disk (fsync), but one fsync of gigabytes
of dirty pages at the end makes the disk idle while the data is decoded and
the CPU idle while it is written. Starting the kernel's writeback every
``step`` bytes (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not
wait) overlaps the two, and the final fsync waits only for the tail.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

__all__ = ["Writeback"]

_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return call


_CALL = _sync_file_range()


class Writeback:
    """Counts bytes written to ``fd`` and starts their writeback every ``step`` bytes."""

    def __init__(self, fd: int, step: int = 64 << 20) -> None:
        self.fd = fd
        self.step = step
        self._pending = 0

    def wrote(self, length: int) -> None:
        self._pending += length
        if self._pending >= self.step and _CALL is not None:
            _CALL(self.fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # the whole file; returns without waiting
            self._pending = 0
