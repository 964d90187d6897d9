"""Progress events and the pause/cancel control the engine checks between chunks."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

from genievm_core.engine.limits import TransferLimits
from genievm_core.errors import ConfigError, JobCancelledError

__all__ = [
    "MAX_WORKERS",
    "DiskProgress",
    "JobControl",
    "ProgressCallback",
    "chunk_workers",
    "default_workers",
    "results_or_cancel",
]

T = TypeVar("T")
MAX_WORKERS = 256  # chunk workers of a job: each may hold a chunk in flight


@dataclass
class DiskProgress:
    """Where one disk's copy stands. ``total`` is the bytes the engine will examine."""

    disk: str
    total: int
    scanned: int = 0
    read: int = 0
    new: int = 0
    deduplicated: int = 0
    zero: int = 0
    done: bool = False


ProgressCallback = Callable[[DiskProgress], None]


class JobControl:
    """Pause, resume and cancel, honoured by the engine between chunks; the job's bandwidth ``limits``."""

    def __init__(self, job_id: str = "-") -> None:
        self.job_id = job_id
        self.limits = TransferLimits()
        self._running = threading.Event()
        self._running.set()
        self._cancelled = threading.Event()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def cancel(self) -> None:
        self._cancelled.set()
        self._running.set()
        self.limits.release()  # a thread asleep in a limit goes on to its next checkpoint

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def checkpoint(self) -> None:
        """Block while paused; raise JobCancelledError once cancelled."""
        self._running.wait()
        if self._cancelled.is_set():
            raise JobCancelledError(f"job {self.job_id} was cancelled")


def results_or_cancel(futures: Mapping[str, Future[T]], control: JobControl) -> Iterator[tuple[str, T]]:
    """Each disk's result in turn; on the first error or interrupt, cancel the others' job.

    The other disks then stop at their next chunk instead of running to the end.
    """
    try:
        for name, fut in futures.items():
            yield name, fut.result()
    except BaseException:
        control.cancel()
        raise


def default_workers() -> int:
    """Chunk workers: two per CPU, since a worker spends much of its time waiting on storage."""
    return 2 * (os.cpu_count() or 1)


def chunk_workers(workers: int | None, default: int) -> int:
    """The chunk workers a job runs: ``workers``, or ``default`` when None; ConfigError when out of range."""
    if workers is None:
        return default
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"invalid configuration: workers: {workers} is out of range (1 to {MAX_WORKERS})")
    return workers
