"""Jobs that run elsewhere: other distributions (the workers') show their jobs beside the registry's.

A distribution whose jobs live outside this host's job registry (``genievm worker``: in a database every
worker shares) names a factory under the ``genievm.job_sources`` entry points::

    [project.entry-points."genievm.job_sources"]
    workers = "genievm_worker.source:job_source"

The factory is called with the path of this client's job registry and returns a ``JobSource``, or None
when it has nothing to show here (no shared database configured). ``GenieVM.jobs`` and ``GenieVM.job``
(so ``genievm jobs list`` and ``show``, and the server's API and console) add what the sources hold.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from genievm_core.choices import DISABLE_AUTOLOAD_ENV
from genievm_core.jobs.job import JobState
from genievm_core.jobs.registry import JobRecord
from genievm_core.logging import get_logger

__all__ = ["JOB_SOURCES_GROUP", "JobSource", "job_sources"]

JOB_SOURCES_GROUP = "genievm.job_sources"
log = get_logger("genievm.jobs")


class JobSource(Protocol):
    def recent(self, states: Sequence[JobState], limit: int) -> list[JobRecord]:
        """The newest ``limit`` jobs (in ``states``, when given), newest first."""

    def get(self, job_id: str) -> JobRecord | None:
        """The job of that id (or unique prefix), None when this source has no such job."""


def job_sources(job_db: Path, disabled: Sequence[str] = ()) -> list[JobSource]:
    """The sources the installed distributions offer for ``job_db``'s client; none when autoloading is off.

    A source that fails to load is logged and left out: the registry's own jobs are still shown.
    """
    if os.environ.get(DISABLE_AUTOLOAD_ENV):
        return []
    found = []
    for ep in sorted(entry_points(group=JOB_SOURCES_GROUP), key=lambda e: e.name):
        if ep.name in disabled:
            continue
        try:
            factory: Callable[[Path], JobSource | None] = ep.load()
            source = factory(job_db)
        except Exception as exc:  # one broken distribution must not hide this host's jobs
            log.warning("jobs.source_failed", source=ep.name, error=f"{type(exc).__name__}: {exc}")
            continue
        if source is not None:
            found.append(source)
    return found
