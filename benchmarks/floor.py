"""The floor under a step: the CPU work the repository format itself needs on the step's data, spread
over every CPU of the machine.

GenieVM's own object codec (``genievm_core.repository.objects.ObjectCodec`` with the defaults: keyed
BLAKE3 chunk id, the zstd probe then zstd level 3, AES-256-GCM) runs over every non-zero 4 MiB block
of the image in this process, one block after the other on one thread, timed with the thread's CPU
clock: no interpreter start-up, no key derivation, no job, no lock. What it stores is then written
once beside the repository and fsynced (``durable_write``). The CPU divided by the CPU count, or the
device's time if longer, is the least wall time any program writing this format could take for that
step on this machine. A target below its floor cannot be met without changing the format's algorithms, which
issue 13 keeps ("the same dedup, compression ratio within 5 %"); a target above it can, and what
GenieVM spends over the floor is its own.

    work = format_work(Path("disk.img"))      # seconds of CPU per step: backup, hash_compare, restore
    floor = work.floor("backup")              # ... divided by os.cpu_count()
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from genievm_storage_fs.storage import BATCH_BYTES

BLOCK = 4 << 20  # the repository's default chunk size


@dataclass
class FormatWork:
    data_bytes: int  # non-zero 4 MiB blocks, whole
    stored_bytes: int  # what the codec made of them
    read_cpu: float  # reading them from the page cache
    id_cpu: float  # keyed BLAKE3 ids
    encode_cpu: float  # probe, zstd, AES-GCM
    decode_cpu: float  # AES-GCM, zstd (a restore)
    cpus: int
    write_cpu: float = 0.0  # writing the stored bytes to a file beside the repository (the kernel's copy)
    write_seconds: float = 0.0  # the same, made durable (one fsync): the device's share
    write_fresh_cpu: float = 0.0  # the write's first try, into pages the file cache had not held just before

    def fresh_pages_note(self) -> str:
        """Where writing into fresh pages cost clearly more than the floor counts: how much, on every CPU."""
        if self.write_fresh_cpu < 1.5 * self.write_cpu or not self.stored_bytes:
            return ""
        more = (self.write_fresh_cpu - self.write_cpu) / self.cpus
        return (
            f"writing into fresh pages: the first try of the same write took {self.write_fresh_cpu:.2f} CPU-s, not "
            f"{self.write_cpu:.2f} (on a VM whose host takes back free memory, each new page of the file cache costs "
            f"a fault on the host); a backup writes new files, so it may meet up to {more:.2f} s more than the floor"
        )

    def cpu_seconds(self, step: str) -> float:
        """``backup``: read, id, encode, write what is stored; ``hash_compare``: read and id (an incremental
        without CBT, the changed blocks' encoding left out); ``restore``: decode, write the data."""
        return {
            "backup": self.read_cpu + self.id_cpu + self.encode_cpu + self.write_cpu,
            "hash_compare": self.read_cpu + self.id_cpu,
            "restore": self.decode_cpu + self.write_cpu * self._restored,
        }[step]

    def floor(self, step: str) -> float:
        """The step's CPU on every CPU at once, or the device's time to make its bytes durable if longer."""
        device = {"backup": self.write_seconds, "hash_compare": 0.0, "restore": self.write_seconds * self._restored}
        return max(self.cpu_seconds(step) / self.cpus, device[step])

    @property
    def _restored(self) -> float:  # a restore writes the data, a backup what it stores of it
        return self.data_bytes / self.stored_bytes if self.stored_bytes else 0.0


def format_work(
    image: Path, *, compression_level: int = 3, encrypted: bool = True, scratch: Path | None = None
) -> FormatWork:
    """The codec's CPU time over every non-zero block of ``image`` (a raw file; holes skipped, as SEEK_DATA
    lets GenieVM skip them, and blocks of zeros read but not counted). The allocator is tuned as the CLI
    tunes it (4 MiB buffers kept in the heap, no page faults for each). Best run in a forked child: the
    benchmark's own process stays small (its peak RSS is its children's floor) and free of GenieVM.
    With ``scratch`` (a folder on the repository's filesystem), as many bytes as were stored are written
    there in 4 MiB writes and fsynced once, then removed: the write's CPU and the device's time (the
    least of two tries)."""
    from genievm_core.engine.memory import tune_allocator
    from genievm_core.repository.keys import create_keys
    from genievm_core.repository.objects import ObjectCodec

    tune_allocator()
    keys = create_keys("floor", scrypt_n=1 << 10)[0] if encrypted else None  # a throwaway key: its use is timed
    codec = ObjectCodec(keys, compression_level=compression_level)
    zero = bytes(BLOCK)
    data = stored = 0
    read = ids = enc = dec = 0.0
    fd = os.open(image, os.O_RDONLY)
    try:
        for offset in data_offsets(fd):
            t0 = time.thread_time()
            block = os.pread(fd, BLOCK, offset)
            t1 = time.thread_time()
            n = len(block)
            if block == zero[:n]:
                continue
            cid = codec.chunk_id(block)
            t2 = time.thread_time()
            blob = bytes(codec.encode(cid.hex(), block))
            t3 = time.thread_time()
            codec.decode(cid.hex(), blob)
            t4 = time.thread_time()
            read, ids, enc, dec = read + t1 - t0, ids + t2 - t1, enc + t3 - t2, dec + t4 - t3
            data, stored = data + n, stored + len(blob)
    finally:
        os.close(fd)
    work = FormatWork(data, stored, read, ids, enc, dec, os.cpu_count() or 1)
    if scratch is not None:
        work.write_cpu, work.write_seconds, work.write_fresh_cpu = durable_write(scratch, stored)
    return work


def data_offsets(fd: int) -> Iterator[int]:
    """The offsets of the BLOCK-long reads that cover the data of the file open as ``fd``, holes skipped
    (SEEK_DATA, as GenieVM's image source skips them)."""
    offset, size = 0, os.fstat(fd).st_size
    while offset < size:
        try:
            offset = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after offset
            return
        yield offset
        offset += BLOCK


def durable_write(folder: Path, size: int, repeat: int = 2) -> tuple[float, float, float]:
    """CPU seconds and wall seconds of writing ``size`` bytes to a new file in ``folder`` as the filesystem
    target makes its chunks durable: fsynced a batch (``BATCH_BYTES``) at a time, each batch's pages then dropped
    from the cache. The least of ``repeat`` tries, each after a sync, and the first try's CPU seconds. A later
    try writes into the pages the one before freed; the first may pay for evicting other pages, which a floor
    must not count, and on a VM for pages its host has to fault in (``FormatWork.fresh_pages_note``)."""
    block, path = os.urandom(BLOCK), folder / f".floor-{os.getpid()}"
    tries = []
    for _ in range(repeat):
        os.sync()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            started, cpu = time.perf_counter(), time.thread_time()
            done, batch_end = 0, BATCH_BYTES
            while done < size:
                done += os.write(fd, block[: min(size - done, BLOCK)])
                if done >= batch_end or done == size:
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, done, os.POSIX_FADV_DONTNEED)
                    batch_end = done + BATCH_BYTES
            tries.append((time.thread_time() - cpu, time.perf_counter() - started))
        finally:
            os.close(fd)
            path.unlink()
    return min(t[0] for t in tries), min(t[1] for t in tries), tries[0][0]


def verdict(name: str, seconds: float, target_seconds: float, floor: float, job_seconds: float | None) -> str:
    """One line: why ``name`` (``seconds``) misses ``target_seconds``, against the format's ``floor``."""
    job = f"; its job took {job_seconds:.2f} s, start-up and exit {seconds - job_seconds:.2f} s" if job_seconds else ""
    if target_seconds < floor:
        return (
            f"{name}: the target ({target_seconds:.2f} s) is below the format's floor on this machine "
            f"({floor:.2f} s): physically out of reach without other algorithms{job}"
        )
    return (
        f"{name}: the target ({target_seconds:.2f} s) is above the format's floor ({floor:.2f} s): "
        f"{seconds - target_seconds:.2f} s of GenieVM's {seconds:.2f} s is its own to remove{job}"
    )
