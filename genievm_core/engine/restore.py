"""The restore side of the copy engine: repository → chunks → disk sink.

The same bounded pipeline in reverse: workers fetch, authenticate, decrypt,
decompress and check each chunk's id; the disk's thread writes the results in
order. On a sink that starts zeroed, zero chunks are not written and zero
runs of ``SPARSE_BLOCK`` bytes inside a chunk are skipped, so holes stay holes.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from genievm_core.engine.control import DiskProgress, JobControl, ProgressCallback
from genievm_core.plugin.protocols import DiskSink, Problem
from genievm_core.repository import ZERO_ID, ChunkIndex, Repository

__all__ = ["RestoreEngine", "nonzero_runs"]

SPARSE_BLOCK = 64 << 10
_ZERO_BLOCK = bytes(SPARSE_BLOCK)


def nonzero_runs(data: bytes, block: int = SPARSE_BLOCK) -> list[tuple[int, int]]:
    """``(start, end)`` of the parts of ``data`` that are not whole zero blocks, merged.

    Each block is compared in place (``startswith``: a memcmp that stops at the first non-zero
    byte), so a chunk of data costs a few microseconds, not a scan of all its bytes.
    """
    zero = _ZERO_BLOCK if block == SPARSE_BLOCK else bytes(block)
    runs: list[tuple[int, int]] = []
    size = len(data)
    for start in range(0, size, block):
        end = min(start + block, size)
        if data.startswith(zero if end - start == block else zero[: end - start], start):
            continue
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


class RestoreEngine:
    def __init__(
        self,
        repo: Repository,
        pool: ThreadPoolExecutor,
        *,
        window: int = 4,
        progress: ProgressCallback | None = None,
        control: JobControl | None = None,
    ) -> None:
        self.repo = repo
        self.pool = pool
        self.window = window
        self.progress = progress or (lambda _p: None)
        self.control = control or JobControl()

    def restore_disk(self, name: str, index: ChunkIndex, sink: DiskSink) -> None:
        progress = DiskProgress(name, index.disk_size)
        self.progress(progress)
        zero = bytes(index.chunk_size)
        inflight: deque[tuple[int, Future[tuple[bytes, list[tuple[int, int]]]]]] = deque()
        sparse = sink.zeroed
        limits = self.control.limits

        def fetch(cid: bytes) -> tuple[bytes, list[tuple[int, int]]]:
            data = self.repo.get_chunk(cid, check_content=False)  # the tag, where encrypted (verify-after reads back)
            limits.read.take(len(data))
            return data, nonzero_runs(data) if sparse else [(0, len(data))]

        def write(item: tuple[int, Future[tuple[bytes, list[tuple[int, int]]]]]) -> None:
            i, fut = item
            data, runs = fut.result()
            base = i * index.chunk_size
            for start, end in runs:
                sink.write(base + start, data if (start, end) == (0, len(data)) else data[start:end])
            limits.write.take(sum(end - start for start, end in runs))
            progress.scanned += len(data)
            progress.read += len(data)
            self.progress(progress)

        try:
            for i, cid in enumerate(index):
                self.control.checkpoint()
                if cid == ZERO_ID:
                    length = index.chunk_length(i)
                    if not sink.zeroed:
                        sink.write(i * index.chunk_size, zero[:length])
                        limits.write.take(length)
                    progress.scanned += length
                    progress.zero += length
                    continue
                inflight.append((i, self.pool.submit(fetch, cid)))
                if len(inflight) >= self.window:
                    write(inflight.popleft())
            while inflight:
                write(inflight.popleft())
        finally:
            for _, fut in inflight:
                fut.cancel()
        progress.done = True
        self.progress(progress)

    def compare(self, name: str, index: ChunkIndex, sink: DiskSink) -> list[Problem]:
        """Read the restored disk back and check every chunk against the index.

        On a sink that started zeroed, zero chunks were never written (they are
        holes of a new file), so they are not read back.
        """
        problems: list[Problem] = []
        zero = bytes(index.chunk_size)
        inflight: deque[tuple[int, Future[bytes]]] = deque()

        def check(item: tuple[int, Future[bytes]]) -> None:
            i, fut = item
            if fut.result() != index[i]:
                problems.append(Problem(name, "restored data differs from the backup", i))

        def chunk_id(i: int) -> bytes:
            data = sink.read(i * index.chunk_size, index.chunk_length(i))
            return ZERO_ID if data == zero[: len(data)] else self.repo.codec.chunk_id(data)

        for i in range(index.count):
            self.control.checkpoint()
            if sink.zeroed and index[i] == ZERO_ID:
                continue
            inflight.append((i, self.pool.submit(chunk_id, i)))
            if len(inflight) >= self.window:
                check(inflight.popleft())
        while inflight:
            check(inflight.popleft())
        return problems
