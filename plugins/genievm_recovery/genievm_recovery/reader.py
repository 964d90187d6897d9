"""Random reads of a backed-up disk, chunk by chunk, through the repository's own reader.

``DiskReader`` maps a byte range to the chunks of the disk's index: an entry of
zeros (an all-zero chunk, never stored) is answered without I/O; any other
chunk comes from ``Repository.get_chunk`` (fetched, checked, decrypted and
decompressed there) through a ``ChunkCache``. Block status comes from the
index alone: a zero entry is a hole.

The cache is an LRU bounded in bytes and shared by the disks of an export (a
chunk two disks share is held once). A chunk wanted by several threads at
once is fetched once; at most ``max_fetches`` are fetched at a time, so
memory stays bounded whatever the number of clients.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from genievm_core.repository import Repository
from genievm_core.repository.index import ChunkIndex

__all__ = ["DEFAULT_CACHE", "ChunkCache", "DiskReader", "Extent"]

DEFAULT_CACHE = 64 << 20
ZERO_ENTRY = bytes(32)
Extent = tuple[int, int, bool]  # offset, length, a hole (reads as zeros)


class ChunkCache:
    """Plaintext chunks by id, least recently used dropped first once ``capacity`` bytes are held."""

    def __init__(self, capacity: int = DEFAULT_CACHE, *, max_fetches: int = 2) -> None:
        self.capacity = capacity
        self.held = 0
        self._chunks: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[bytes, threading.Lock] = {}
        self._fetches = threading.BoundedSemaphore(max_fetches)

    def get(self, chunk_id: bytes, load: Callable[[bytes], bytes]) -> bytes:
        while True:
            with self._lock:
                data = self._chunks.get(chunk_id)
                if data is not None:
                    self._chunks.move_to_end(chunk_id)
                    return data
                loading = self._loading.get(chunk_id)
                if loading is None:  # this thread fetches it
                    loading = self._loading[chunk_id] = threading.Lock()
                    loading.acquire()
                    break
            with loading:  # another thread fetches it: wait, then look again
                pass
        try:
            with self._fetches:
                data = load(chunk_id)
            self._keep(chunk_id, data)
            return data
        finally:
            with self._lock:
                del self._loading[chunk_id]
            loading.release()

    def _keep(self, chunk_id: bytes, data: bytes) -> None:
        if len(data) > self.capacity:
            return
        with self._lock:
            self._chunks[chunk_id] = data
            self.held += len(data)
            while self.held > self.capacity:
                _, dropped = self._chunks.popitem(last=False)
                self.held -= len(dropped)


class DiskReader:
    """One disk of one backup, read at any offset."""

    def __init__(self, repo: Repository, index: ChunkIndex, cache: ChunkCache) -> None:
        self.repo = repo
        self.index = index
        self.cache = cache
        self.fetch: Callable[[bytes], bytes] = repo.get_chunk  # a chunk the cache lacks, from the repository

    @property
    def size(self) -> int:
        return self.index.disk_size

    def read_into(self, buf: memoryview, offset: int) -> None:
        """Fill ``buf`` with the disk's bytes from ``offset`` on (the range must lie inside the disk)."""
        if offset < 0 or offset + len(buf) > self.size:
            raise ValueError(f"read of {len(buf)} bytes at {offset} is outside a disk of {self.size} bytes")
        chunk_size = self.index.chunk_size
        done = 0
        while done < len(buf):
            position = offset + done
            i, start = divmod(position, chunk_size)
            n = min(len(buf) - done, self.index.chunk_length(i) - start)
            chunk_id = self.index[i]
            if chunk_id == ZERO_ENTRY:
                buf[done : done + n] = bytes(n)
            else:
                data = self.cache.get(chunk_id, self.fetch)
                buf[done : done + n] = data[start : start + n]
            done += n

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self.read_into(memoryview(buf), offset)
        return bytes(buf)

    def extents(self, offset: int, length: int) -> list[Extent]:
        """The range ``[offset, offset + length)`` as runs of data and holes, from the chunk index."""
        end = min(offset + length, self.size)
        chunk_size = self.index.chunk_size
        runs: list[Extent] = []
        position = offset
        while position < end:
            i = position // chunk_size
            stop = min(end, (i + 1) * chunk_size)
            hole = self.index[i] == ZERO_ENTRY
            if runs and runs[-1][2] == hole:
                start, _, _ = runs[-1]
                runs[-1] = (start, stop - start, hole)
            else:
                runs.append((position, stop - position, hole))
            position = stop
        return runs
