"""The workers' jobs in ``genievm jobs list`` and ``show`` (and the server's API): the core's
``genievm.job_sources`` entry point, reading the shared job state."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from genievm_core.errors import JobNotFoundError
from genievm_core.jobs import JobRecord, JobState
from genievm_worker.settings import DB_ENV, db_url
from genievm_worker.state import SharedJobs

__all__ = ["WorkerJobs", "job_source"]


class WorkerJobs:
    def __init__(self, shared: SharedJobs) -> None:
        self.shared = shared

    def recent(self, states: Sequence[JobState], limit: int) -> list[JobRecord]:
        return self.shared.recent(states, limit)

    def get(self, job_id: str) -> JobRecord | None:
        try:
            return self.shared.get(job_id)
        except JobNotFoundError:
            return None


def job_source(job_db: Path) -> WorkerJobs | None:
    """The shared job state of ``$GENIEVM_WORKER_DB``, else the server's database beside ``job_db`` when it
    exists (nothing is created to list jobs)."""
    if not os.environ.get(DB_ENV) and not (job_db.parent / "server.sqlite").exists():
        return None
    return WorkerJobs(SharedJobs(db_url(None, job_db)))
