"""The shared job state: every worker's jobs in one database (the server's: PostgreSQL for many hosts, SQLite
for one), through SQLAlchemy Core, beside the server's tables and versioned apart from them.

A job is *waiting* from its submission until a worker claims it; *running* while the worker that claimed it
keeps its lease (a heartbeat every few seconds); then succeeded, failed or cancelled. A claim is one
conditional UPDATE, so two workers never run one job at once: a redelivered job whose lease is still held
waits; one whose worker died (its lease ran out) is claimed again; one that ended is not run again.
Each claim is an attempt, kept with its worker and times (``genievm jobs remote show``).

Schema 1::

    genievm_worker_schema(version)
    worker_jobs(id, kind, queue, provider, vm, repository, spec, state, worker, attempts, phase, progress,
                result, error, exit_code, created_at, started_at, finished_at, heartbeat_at, lease_until)
    worker_attempts(id, job_id, worker, started_at, heartbeat_at, ended_at, outcome)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from genievm_core.errors import ConfigError, JobNotFoundError
from genievm_core.jobs import JobRecord, JobState
from genievm_core.jobs.registry import DiskRow
from genievm_worker.settings import safe_url

__all__ = ["WAITING", "Attempt", "Claim", "SharedJobs"]

WAITING = "waiting"  # shown as pending to the core's job listing
SCHEMA_VERSION = 1
FINISHED = ("succeeded", "failed", "cancelled")

metadata = sa.MetaData()
_version = sa.Table("genievm_worker_schema", metadata, sa.Column("version", sa.Integer, nullable=False))
jobs = sa.Table(
    "worker_jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("queue", sa.String(200), nullable=False),
    sa.Column("provider", sa.String(64)),
    sa.Column("vm", sa.String(200)),
    sa.Column("repository", sa.Text),
    sa.Column("spec", sa.Text, nullable=False),  # what to run, as JSON (never a secret)
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("worker", sa.String(200)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("phase", sa.String(20)),
    sa.Column("progress", sa.Text),  # JSON: per disk, the core's DiskRow fields
    sa.Column("result", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("exit_code", sa.Integer),
    sa.Column("created_at", sa.String(40), nullable=False, index=True),
    sa.Column("started_at", sa.String(40)),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("heartbeat_at", sa.String(40)),
    sa.Column("lease_until", sa.String(40)),
)
attempts = sa.Table(
    "worker_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("worker", sa.String(200), nullable=False),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("heartbeat_at", sa.String(40), nullable=False),
    sa.Column("ended_at", sa.String(40)),
    sa.Column("outcome", sa.String(20)),
)


@dataclass(frozen=True)
class Claim:
    """What ``claim`` found: ``run`` (this worker runs attempt ``attempt``), ``done`` (it ended before: not run
    again), ``busy`` (another worker holds its lease) or ``gone`` (no such job)."""

    outcome: str
    attempt: int = 0
    spec: dict[str, Any] | None = None
    state: str | None = None


@dataclass(frozen=True)
class Attempt:
    job_id: str
    worker: str
    started_at: datetime
    heartbeat_at: datetime
    ended_at: datetime | None
    outcome: str | None


def hold_schema_lock(conn: sa.Connection) -> None:
    """Hold, until ``conn``'s transaction ends, a lock that every opener of the database takes before it
    reads or makes the tables: PostgreSQL's advisory lock, SQLite's write lock (``BEGIN IMMEDIATE``)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('genievm_worker_schema'))"))
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the driver's own BEGIN comes only before a write, not DDL


def _now() -> datetime:
    return datetime.now(UTC)


class SharedJobs:
    """The shared job state at ``url`` (its tables made or upgraded on open)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            sqlite = sa.engine.make_url(url).get_backend_name() == "sqlite"
            self.engine: Engine = sa.create_engine(
                url, pool_pre_ping=True, connect_args={"timeout": 30} if sqlite else {}
            )
            with self.engine.begin() as conn:
                hold_schema_lock(conn)  # hosts started together on a new database: one makes the tables
                metadata.create_all(conn)
                found = conn.execute(sa.select(_version.c.version)).scalar()
                if found is None:
                    conn.execute(_version.insert().values(version=SCHEMA_VERSION))
                elif found > SCHEMA_VERSION:
                    raise ConfigError(
                        f"invalid configuration: worker database {safe_url(url)}: schema {found} is newer than "
                        f"this worker's {SCHEMA_VERSION}"
                    )
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigError(
                f"invalid configuration: worker database: cannot open {safe_url(url)}: "
                f"{getattr(exc, 'orig', None) or exc}"
            ) from None
        except ModuleNotFoundError as exc:  # psycopg for PostgreSQL
            raise ConfigError(f"invalid configuration: worker database: {safe_url(url)} needs {exc.name}") from None

    def close(self) -> None:
        self.engine.dispose()

    # the submitter's side

    def add(self, job_id: str, kind: str, queue: str, spec: dict[str, Any], *, provider: str | None,
            vm: str | None, repository: str | None) -> None:  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(
                jobs.insert().values(
                    id=job_id, kind=kind, queue=queue, provider=provider, vm=vm, repository=repository,
                    spec=json.dumps(spec), state=WAITING, attempts=0, created_at=_now().isoformat(),
                )
            )

    def forget(self, job_id: str) -> None:
        """Remove a job that was never queued (the broker refused it)."""
        with self.engine.begin() as conn:
            conn.execute(jobs.delete().where(jobs.c.id == job_id, jobs.c.state == WAITING))

    # the worker's side

    def claim(self, job_id: str, worker: str, lease: float) -> Claim:
        """Take the job for ``worker`` unless it ended or another worker's lease on it still holds."""
        now = _now()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
            if row is None:
                return Claim("gone")
            if row["state"] in FINISHED:
                return Claim("done", state=row["state"])
            taken = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    sa.or_(jobs.c.state == WAITING, jobs.c.lease_until < now.isoformat()),
                    jobs.c.state.notin_(FINISHED),
                )
                .values(
                    state="running", worker=worker, attempts=jobs.c.attempts + 1, heartbeat_at=now.isoformat(),
                    lease_until=(now + timedelta(seconds=lease)).isoformat(), error=None,
                    started_at=sa.func.coalesce(jobs.c.started_at, now.isoformat()),
                )
            ).rowcount
            if not taken:
                return Claim("busy", state=row["state"])
            conn.execute(
                attempts.insert().values(
                    job_id=job_id, worker=worker, started_at=now.isoformat(), heartbeat_at=now.isoformat()
                )
            )
            return Claim("run", attempt=row["attempts"] + 1, spec=json.loads(row["spec"]))

    def release(self, job_id: str, worker: str) -> None:
        """Give a claimed job back, waiting, when it could not start here (its VM busy, a cap full)."""
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.state == "running")
                .values(state=WAITING, worker=None, lease_until=None)
            )
            conn.execute(
                attempts.update()
                .where(attempts.c.job_id == job_id, attempts.c.worker == worker, attempts.c.ended_at.is_(None))
                .values(ended_at=_now().isoformat(), outcome="waited")
            )

    def heartbeat(self, job_id: str, worker: str, lease: float, *, phase: str | None,
                  progress: list[dict[str, Any]]) -> bool:  # fmt: skip
        """Extend the lease and write the progress; False when the job is no longer this worker's."""
        now = _now()
        with self.engine.begin() as conn:
            mine = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.state == "running")
                .values(
                    heartbeat_at=now.isoformat(), lease_until=(now + timedelta(seconds=lease)).isoformat(),
                    phase=phase, progress=json.dumps(progress),
                )
            ).rowcount
            conn.execute(
                attempts.update()
                .where(attempts.c.job_id == job_id, attempts.c.worker == worker, attempts.c.ended_at.is_(None))
                .values(heartbeat_at=now.isoformat())
            )
            return bool(mine)

    def finish(self, job_id: str, worker: str, state: str, *, phase: str | None, progress: list[dict[str, Any]],
               result: dict[str, Any] | None, error: str | None, exit_code: int | None) -> None:  # fmt: skip
        now = _now().isoformat()
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.worker == worker)
                .values(
                    state=state, phase=phase, progress=json.dumps(progress), finished_at=now, heartbeat_at=now,
                    lease_until=None, result=json.dumps(result, default=str) if result is not None else None,
                    error=error, exit_code=exit_code,
                )
            )
            conn.execute(
                attempts.update()
                .where(attempts.c.job_id == job_id, attempts.c.worker == worker, attempts.c.ended_at.is_(None))
                .values(ended_at=now, outcome=state)
            )

    # anyone's side

    def recent(self, states: Sequence[JobState] = (), limit: int = 50) -> list[JobRecord]:
        query = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
        if states:
            query = query.where(jobs.c.state.in_([_stored(s) for s in states]))
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    def get(self, job_id: str) -> JobRecord:
        like = job_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self.engine.connect() as conn:
            rows = list(conn.execute(sa.select(jobs).where(jobs.c.id.like(like, escape="\\")).limit(2)).mappings())
        exact = [r for r in rows if r["id"] == job_id]
        if exact or len(rows) == 1:
            return _record((exact or rows)[0])
        several = " (the prefix names several)" if rows else ""
        raise JobNotFoundError(f"no job {job_id} in the worker database {safe_url(self.url)}{several}")

    def state_of(self, job_id: str) -> str:
        with self.engine.connect() as conn:
            state = conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id)).scalar()
        if state is None:
            raise JobNotFoundError(f"no job {job_id} in the worker database {safe_url(self.url)}")
        return str(state)

    def attempts(self, job_id: str | None = None) -> list[Attempt]:
        query = sa.select(attempts).order_by(attempts.c.id)
        if job_id is not None:
            query = query.where(attempts.c.job_id == job_id)
        with self.engine.connect() as conn:
            return [
                Attempt(
                    r["job_id"], r["worker"], datetime.fromisoformat(r["started_at"]),
                    datetime.fromisoformat(r["heartbeat_at"]),
                    datetime.fromisoformat(r["ended_at"]) if r["ended_at"] else None, r["outcome"],
                )
                for r in conn.execute(query).mappings()
            ]


def _stored(state: JobState) -> str:
    return WAITING if state is JobState.PENDING else state.value


def _record(row: sa.RowMapping) -> JobRecord:
    """A row as the core's JobRecord: ``host`` is the worker's name (``-`` while it waits), ``pid`` 0."""
    state = JobState.PENDING if row["state"] == WAITING else JobState(row["state"])
    progress = json.loads(row["progress"]) if row["progress"] else []
    spec = json.loads(row["spec"])
    where = f" on queue {row['queue']}" + (" (waiting for a worker)" if row["state"] == WAITING else "")
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        state=state,
        requested=None,
        description=str(spec.get("description", row["kind"])) + where,
        vm=row["vm"],
        repository=row["repository"],
        host=row["worker"] or "-",
        pid=0,
        created_at=datetime.fromisoformat(row["created_at"]),
        started_at=datetime.fromisoformat(row["started_at"]) if row["started_at"] else None,
        finished_at=datetime.fromisoformat(row["finished_at"]) if row["finished_at"] else None,
        heartbeat_at=datetime.fromisoformat(row["heartbeat_at"] or row["created_at"]),
        error=row["error"],
        exit_code=row["exit_code"],
        result=json.loads(row["result"]) if row["result"] else None,
        phase=row["phase"],
        disks=[DiskRow(**d) for d in progress],
    )
