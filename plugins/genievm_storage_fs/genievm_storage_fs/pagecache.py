"""What the filesystem target leaves in the page cache: chunk files neither stay there nor come back.

``drop_cached``: once a batch's file is durable its pages are dropped
(storage.py). ``ObjectReader``: a restore or a check therefore mostly reads
files that are not cached. A buffered read of such a file makes the kernel take
a page-cache page for every 4 KiB of it (on a host whose memory is full of
cache, each one reclaimed from something else; on a VM whose host takes back
freed memory, a fault on the host) and copy out of it. An ``O_DIRECT`` read goes
from the device into a page-aligned buffer the thread keeps: about half the CPU
of a restore (docs/performance.md). Whether a file is cached is asked of its
first byte (``preadv`` with ``RWF_NOWAIT`` fails with EAGAIN where it would wait
for the device); objects are written and dropped whole. The pages that question
reads ahead are dropped after a direct read, so an object read past the cache
once is read so again. Where the platform or the file system refuses either
flag, reads are buffered.
"""

from __future__ import annotations

import errno
import fcntl
import io
import mmap
import os
import threading

__all__ = ["DIRECT_FROM", "ObjectReader", "drop_cached"]

DIRECT_FROM = 256 << 10  # smaller objects (manifests, indexes, small chunks) are read buffered
_ALIGN = mmap.PAGESIZE  # O_DIRECT: the buffer's address and length (a page covers 512 and 4096-byte sectors)


class ObjectReader:
    """``read(fd)``: the whole file's bytes; for any number of threads (each keeps its own buffer)."""

    def __init__(self) -> None:
        self.direct = all(hasattr(os, name) for name in ("O_DIRECT", "RWF_NOWAIT", "preadv"))
        self._local = threading.local()

    def read(self, fd: int) -> bytes:
        size = os.fstat(fd).st_size
        if self.direct and size >= DIRECT_FROM and not self._cached(fd):
            data = self._read_direct(fd, size)
            if data is not None:
                return data
        return io.FileIO(fd, closefd=False).readall()

    def _cached(self, fd: int) -> bool:
        try:
            os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self.direct = False  # no RWF_NOWAIT on this file system
        return True

    def _read_direct(self, fd: int, size: int) -> bytes | None:
        """The file read with ``O_DIRECT`` (None where the file system refuses it), then its pages dropped."""
        status = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, status | os.O_DIRECT)
            with memoryview(self._buffer(size)) as view:
                done = 0
                while done < size and (n := os.preadv(fd, [view[done:]], done)):  # n: 0 past a truncation
                    done += n
                data = bytes(view[:done])
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.direct = False  # no O_DIRECT on this file system, or another alignment than a page's
            return None
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, status)
        drop_cached(fd)  # the page that _cached read ahead
        return data

    def _buffer(self, size: int) -> mmap.mmap:
        """The thread's buffer: page-aligned (an anonymous mapping), longer than ``size`` by up to a page."""
        buffer: mmap.mmap | None = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) <= size:
            buffer = mmap.mmap(-1, (size // _ALIGN + 1) * _ALIGN)
            self._local.buffer = buffer
        return buffer


def drop_cached(fd: int) -> None:
    """Advise the kernel that the (clean) pages of ``fd`` need not stay cached; advice only, never an error."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):  # AttributeError: a platform without posix_fadvise
        pass
