"""JobManager: runs jobs, several at once up to a limit, and keeps the registry in step.

A manager owns the jobs it runs. A monitor thread writes their progress to the
registry a few times a second and applies the pause, resume, cancel and
bandwidth-limit requests other processes left there; every change of state is written at
once. On start the manager sweeps the registry for jobs whose owner died.
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from genievm_core.errors import GenieVMError, JobNotFoundError, JobStateError
from genievm_core.jobs.job import Job
from genievm_core.jobs.registry import JobRegistry
from genievm_core.logging import get_logger

__all__ = ["DEFAULT_MAX_CONCURRENT_JOBS", "JobManager"]

DEFAULT_MAX_CONCURRENT_JOBS = 2
log = get_logger("genievm.jobs")


class JobManager:
    """Use as a context manager, or call ``start`` and ``close``."""

    def __init__(
        self, registry: JobRegistry, *, max_concurrent: int = DEFAULT_MAX_CONCURRENT_JOBS, poll_interval: float = 0.2
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.registry = registry
        self.max_concurrent = max_concurrent
        self.poll_interval = poll_interval
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="genievm-job")
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self) -> JobManager:
        for job_id in self.registry.sweep_stale():
            log.warning("jobs.stale_job_failed", job=job_id)
        self._monitor = threading.Thread(target=self._watch, name="genievm-job-monitor", daemon=True)
        self._monitor.start()
        return self

    def close(self) -> None:
        """Wait for the jobs that were submitted, then stop the monitor."""
        self._pool.shutdown(wait=True)
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join()
        self._apply_requests()

    def __enter__(self) -> JobManager:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # running jobs

    def submit(self, job: Job) -> Future[None]:
        """Run ``job`` in the background; it stays pending while ``max_concurrent`` jobs run."""
        self._register(job)
        return self._pool.submit(self._run, job)

    def run(self, job: Job) -> Job:
        """Run ``job`` in this thread (the foreground); raise its error when it did not succeed."""
        self._register(job)
        self._run(job)
        if job.exception is not None:
            raise job.exception
        return job

    def job(self, job_id: str) -> Job:
        """A job this manager runs or ran."""
        with self._lock:
            try:
                return self._jobs[job_id]
            except KeyError:
                raise JobNotFoundError(f"job {job_id} is not run by this process") from None

    # internals

    def _register(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
        self.registry.add(job)
        job.add_listener(self.registry.update)

    def _run(self, job: Job) -> None:
        job.run()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self._apply_requests()

    def _apply_requests(self) -> None:
        with self._lock:
            active = [j for j in self._jobs.values() if not j.finished]
        for job in active:
            try:
                self.registry.save_progress(job)
                action = self.registry.take_request(job.id)
                if action is not None:
                    log.info("jobs.request", job=job.id, action=action)
                    getattr(job, action)()
                limits = self.registry.take_limits(job.id)
                if limits is not None:
                    log.info("jobs.limits_request", job=job.id, **limits)
                    job.limit(**limits)
            except JobStateError as exc:  # e.g. the job ended between the request and now
                log.info("jobs.request_ignored", job=job.id, error=str(exc))
            except (GenieVMError, sqlite3.Error) as exc:
                log.warning("jobs.monitor_error", job=job.id, error=str(exc))
