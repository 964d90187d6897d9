"""Writing a restored raw disk (a file or a block device) at the speed of the device.

Buffered writes of a restore cost more CPU than decoding it: the kernel copies
every byte into the page cache, allocates it page by page and then writes it
back, and a final fsync waits for whatever is still dirty. Where the file
system allows it, aligned ranges go through a second descriptor opened with
``O_DIRECT`` instead: one copy into a page-aligned buffer, then the device
reads it straight from there (about a tenth of the CPU of a buffered write on
the benchmark machine). What is not aligned (the tail of a disk whose size is
not a multiple of ``DIRECT_ALIGN``), and everything where ``O_DIRECT`` is
refused (tmpfs before Linux 6.6, some FUSE file systems), is written buffered, with the
kernel's writeback started every ``step`` bytes
(``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not wait) so that the
final fsync waits only for the tail. ``sync`` is that one final flush.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["DIRECT_ALIGN", "RawDiskWriter"]

DIRECT_ALIGN = 4096  # offsets, lengths and buffer addresses of O_DIRECT writes; covers 512 and 4096-byte sectors
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols, libc's among them (no ldconfig run)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return call


_SYNC_FILE_RANGE = _sync_file_range()


def _open_direct(path: str | os.PathLike[str]) -> int | None:
    """A second, write-only descriptor with ``O_DIRECT``; None where the platform or file system refuses it."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError:
        return None


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class RawDiskWriter:
    """Writes to ``fd`` (open read-write on ``path``), directly where it can, and flushes once in ``sync``.

    Direct writes are queued to one thread of the writer's own, ``depth`` buffers deep, so the device
    writes one range while the caller copies the next; an error of a queued write is raised by a
    later ``write`` or by ``sync``. ``direct=False`` keeps every write buffered and synchronous.
    ``write`` is for one thread at a time; ``read`` may come from several.
    """

    def __init__(
        self, fd: int, path: str | os.PathLike[str], *, direct: bool = True, depth: int = 2, step: int = 64 << 20
    ) -> None:
        self.fd = fd
        self.step = step
        self.depth = depth
        self._direct_fd = _open_direct(path) if direct else None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="genievm-write") if self._direct_fd is not None else None
        self._free: list[mmap.mmap] = []  # page-aligned buffers
        self._queued: deque[tuple[Future[None], mmap.mmap]] = deque()
        self._pending = 0
        self._draining = threading.Lock()

    @property
    def direct(self) -> bool:
        """True while aligned writes go around the page cache."""
        return self._direct_fd is not None

    def write(self, offset: int, data: bytes | memoryview) -> None:
        length = len(data)
        if self._direct_fd is not None and length and offset % DIRECT_ALIGN == 0 and length % DIRECT_ALIGN == 0:
            buffer = self._buffer(length)
            buffer[:length] = data
            assert self._pool is not None
            fut = self._pool.submit(self._write_direct, memoryview(buffer)[:length], offset)
            self._queued.append((fut, buffer))
            return
        self._drain()  # the direct writes before it first, in case this one overlaps them
        _pwrite_all(self.fd, data, offset)
        self._pending += length
        if self._pending >= self.step and _SYNC_FILE_RANGE is not None:
            _SYNC_FILE_RANGE(self.fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # the whole file; returns without waiting
            self._pending = 0

    def read(self, offset: int, length: int) -> bytes:
        """What was written there (queued writes finished first)."""
        self._drain()
        return os.pread(self.fd, length, offset)

    def sync(self) -> None:
        """Make everything written durable: one fsync (data, the device's cache and the file's metadata)."""
        self._drain()
        os.fsync(self.fd)

    def close(self) -> None:
        """Wait for queued writes (their errors are not raised here), release the buffers; ``fd`` stays open."""
        while self._queued:
            fut, _ = self._queued.popleft()
            fut.exception()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        self._free.clear()  # unmapped once the last view of each is gone (closing one still viewed would fail)

    def _buffer(self, length: int) -> mmap.mmap:
        """A free buffer of at least ``length`` bytes, waiting for the oldest queued write when ``depth`` are queued."""
        while len(self._queued) >= self.depth:
            fut, done = self._queued.popleft()
            self._free.append(done)
            fut.result()
        buffer = self._free.pop() if self._free else mmap.mmap(-1, length)
        if len(buffer) < length:
            buffer = mmap.mmap(-1, length)
        return buffer

    def _drain(self) -> None:
        with self._draining:  # reads of verify-after-restore come from several threads
            while self._queued:
                fut, buffer = self._queued[0]
                fut.result()
                self._queued.popleft()
                self._free.append(buffer)

    def _write_direct(self, view: memoryview, offset: int) -> None:
        assert self._direct_fd is not None
        try:
            _pwrite_all(self._direct_fd, view, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: this file system wants another alignment: write it buffered
                raise
            _pwrite_all(self.fd, view, offset)
