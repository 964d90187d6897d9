"""The job lifecycle every kind of job shares.

States::

    pending ──► running ◄──► paused
       │           │            │
       └───────────┴────────────┴──► succeeded | failed | cancelled

``run`` does the work in the calling thread (a JobManager calls it in one of
its threads, or in the foreground). Pause and cancel are honoured by the
engine between chunks through the job's ``JobControl``: ``pause`` makes the
job paused at once (the chunks in flight finish), ``cancel`` stops it at the
next chunk and the job ends cancelled once its work has unwound (the provider
removes its point in time; nothing uncommitted is visible in the repository).
"""

from __future__ import annotations

import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from genievm_core.engine import DiskProgress, JobControl, ProgressCallback
from genievm_core.errors import GenieVMError, JobCancelledError, JobInterruptedError, JobStateError
from genievm_core.logging import bound, get_logger

__all__ = ["FINAL_STATES", "Job", "JobState", "new_job_id"]

log = get_logger("genievm.jobs")


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
_NEXT: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.PAUSED, *FINAL_STATES}),
    JobState.PAUSED: frozenset({JobState.RUNNING, *FINAL_STATES}),
}
_ACTION = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}


def new_job_id() -> str:
    """12 hex digits, random: short enough to type, unique enough for one registry."""
    return uuid.uuid4().hex[:12]


class Job(ABC):
    """One unit of work with a lifecycle, progress per disk, and a result.

    Subclasses set ``kind`` and implement ``execute``, which returns a JSON-able
    summary of the result and reports progress through ``self.on_progress``.
    """

    kind: ClassVar[str]

    def __init__(self, *, description: str, vm: str | None = None, repository: str | None = None) -> None:
        self.id = new_job_id()
        self.description = description
        self.vm = vm
        self.repository = repository
        self.state = JobState.PENDING
        self.created_at = datetime.now(UTC)
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.error: str | None = None
        self.exit_code: int | None = None
        self.phase: str | None = None  # the phase of the work running now: plan, transfer, verify, commit
        self.result: dict[str, Any] | None = None
        self.exception: BaseException | None = None
        self.control = JobControl(self.id)
        self.extra_progress: ProgressCallback | None = None  # e.g. the CLI's progress bars
        self._progress: dict[str, DiskProgress] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Job], None]] = []
        self._done = threading.Event()

    # lifecycle

    def run(self) -> None:
        """Do the work here and now; the outcome is in ``state`` (and ``exception``), never raised.

        A job cancelled before it started returns at once.
        """
        if not self._move(JobState.RUNNING, check=False):
            return
        self.started_at = datetime.now(UTC)
        self._notify()
        try:
            with bound(job_id=self.id):  # on every line the job logs
                result = self.execute()
        except (JobCancelledError, JobInterruptedError) as exc:
            self._finish(JobState.CANCELLED, exc)
        except BaseException as exc:  # the job fails; whoever waits for it sees the exception
            if not isinstance(exc, GenieVMError):
                log.debug("job.internal_error", job=self.id, exc_info=True)
            self._finish(JobState.FAILED, exc)
        else:
            self.result = result
            self._finish(JobState.SUCCEEDED, None)

    def pause(self) -> None:
        with self._lock:
            self._check("pause", {JobState.RUNNING})
            self.state = JobState.PAUSED
            self.control.pause()
        self._notify()

    def resume(self) -> None:
        with self._lock:
            self._check("resume", {JobState.PAUSED})
            self.state = JobState.RUNNING
            self.control.resume()
        self._notify()

    def cancel(self) -> None:
        """Stop at the next chunk; a pending job never starts."""
        with self._lock:
            self._check("cancel", {JobState.PENDING, JobState.RUNNING, JobState.PAUSED})
            self.control.cancel()
            pending = self.state is JobState.PENDING
        if pending:
            self._finish(JobState.CANCELLED, JobCancelledError(f"job {self.id} was cancelled before it started"))

    def limit(self, read: float | None = None, write: float | None = None) -> None:
        """Change the bandwidth limits, in MB/s, at once, also while the job runs (None: as it is; 0: no limit)."""
        with self._lock:
            if self.finished:
                raise JobStateError(f"job {self.id} is {self.state.value}; its limits cannot be changed")
            self.control.limits.change(read, write)
        log.info("job.limits", job=self.id, **self.control.limits.as_dict())
        self._notify()

    def enter_phase(self, name: str) -> None:
        """The work moved to phase ``name`` (the registry shows it: ``genievm jobs show``)."""
        self.phase = name
        log.debug("job.phase", job=self.id, phase=name)
        self._notify()

    def fail(self, reason: str) -> None:
        """Mark a job that cannot run (not started) as failed."""
        self._finish(JobState.FAILED, GenieVMError(reason))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended; False when ``timeout`` passed first."""
        return self._done.wait(timeout)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    # progress

    def on_progress(self, progress: DiskProgress) -> None:
        """The engine's progress callback (called from its disk threads)."""
        with self._lock:
            self._progress[progress.disk] = replace(progress)
        if self.extra_progress is not None:
            self.extra_progress(progress)

    def progress(self) -> dict[str, DiskProgress]:
        """A copy of each disk's progress."""
        with self._lock:
            return {name: replace(p) for name, p in self._progress.items()}

    def add_listener(self, listener: Callable[[Job], None]) -> None:
        """Called after every change of state (from the thread that made it)."""
        self._listeners.append(listener)

    @abstractmethod
    def execute(self) -> dict[str, Any]:
        """The work; raises on failure, JobCancelledError when cancelled."""

    # internals

    def _check(self, action: str, allowed: set[JobState]) -> None:
        if self.state not in allowed:
            raise JobStateError(f"job {self.id} is {self.state.value}; it cannot be {_ACTION[action]}")

    def _move(self, new: JobState, *, check: bool) -> bool:
        with self._lock:
            if self.state in FINAL_STATES:
                if check:
                    raise JobStateError(f"job {self.id} is {self.state.value}; it cannot be started")
                return False
            if new not in _NEXT[self.state]:
                raise JobStateError(f"job {self.id} is {self.state.value}; it cannot become {new.value}")
            self.state = new
            return True

    def _finish(self, state: JobState, exc: BaseException | None) -> None:
        if not self._move(state, check=False):
            return
        self.finished_at = datetime.now(UTC)
        self.exception = exc
        if exc is not None:
            self.error = str(exc) or type(exc).__name__
            self.exit_code = exc.exit_code if isinstance(exc, GenieVMError) else 1
        began = self.started_at or self.finished_at
        log.info(  # a job's last line: its result and how long it took
            "job.ended",
            job_id=self.id,
            kind=self.kind,
            result=state.value,
            duration_seconds=round((self.finished_at - began).total_seconds(), 3),
            **({"error": self.error} if exc is not None else {}),
        )
        self._notify()
        self._done.set()

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener(self)
            except Exception as exc:  # a registry that cannot be written must not stop the job
                log.warning("job.listener_failed", job=self.id, error=str(exc))
