"""Where a worker or a submitting client finds the broker and the shared job state, and how long a lease lasts."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from genievm_core.jobs import default_job_db

__all__ = ["BROKER_ENV", "DB_ENV", "DEFAULT_BROKER", "DEFAULT_LEASE", "WorkerSettings", "broker_url", "safe_url"]

BROKER_ENV = "GENIEVM_BROKER_URL"
DB_ENV = "GENIEVM_WORKER_DB"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_LEASE = 60.0  # seconds a job's claim and its VM's lock last without a heartbeat
DEFAULT_VISIBILITY = 3600.0  # seconds before the broker hands an unacknowledged job to another worker


def broker_url(given: str | None) -> str:
    return given or os.environ.get(BROKER_ENV) or DEFAULT_BROKER


def db_url(given: str | None, job_db: Path | None) -> str:
    """``--db``, else ``GENIEVM_WORKER_DB``, else the server's default: ``server.sqlite`` beside the job registry
    (one host: the server, its workers and the CLI share it)."""
    return given or os.environ.get(DB_ENV) or f"sqlite:///{(job_db or default_job_db()).parent / 'server.sqlite'}"


def safe_url(url: str) -> str:
    """A broker or database URL without its password."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1]


@dataclass(frozen=True)
class WorkerSettings:
    broker: str
    database: str
    name: str = f"genievm@{socket.gethostname()}"
    queues: tuple[str, ...] = ()  # none: one queue per installed provider, by its name
    concurrency: int = 2
    lease: float = DEFAULT_LEASE
    visibility_timeout: float = DEFAULT_VISIBILITY
    passphrase_file: Path | None = None
    job_db: Path | None = None  # the worker's own (local) job registry
