"""The job registry: every job of this host in an embedded SQLite database.

The process that runs a job (its *owner*) writes the job's state, progress and
result; any other process may read them and *request* a pause, resume or
cancel by setting the ``requested`` column, which the owner applies between
chunks. Each job records the owner's host, pid and the pid's start time, so a
job whose owner died (SIGKILL, power loss) is found by the stale-job sweep and
marked failed instead of staying running for ever.

Bandwidth limits are the same kind of request: ``limits_requested`` holds the
new limits (JSON, MB/s) until the owner takes them; ``limits`` the job's limits now.

Schema (``PRAGMA user_version`` 3; 1 lacked ``phase``, 2 the limits; both are upgraded on open)::

    jobs(id, kind, state, requested, description, vm, repository, host, pid, pid_start,
         created_at, started_at, finished_at, heartbeat_at, error, exit_code, result, phase,
         limits, limits_requested)
    job_disks(job_id, disk, total, scanned, read, stored, deduplicated, zero, done)

Times are ISO 8601 UTC; ``result`` is JSON. The database is in WAL mode, so
readers never block the owner's writes.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from genievm_core.errors import ConfigError, JobNotFoundError, JobStateError
from genievm_core.jobs.job import FINAL_STATES, Job, JobState
from genievm_core.processes import process_alive, process_start

__all__ = ["JOB_DB_ENV", "DiskRow", "JobRecord", "JobRegistry", "default_job_db"]

JOB_DB_ENV = "GENIEVM_JOB_DB"
SCHEMA_VERSION = 3
STALE_HEARTBEAT = timedelta(minutes=10)  # a job of another host that has not written for this long is dead
_ACTIONS = {
    "pause": ({JobState.RUNNING}, "paused"),
    "resume": ({JobState.PAUSED}, "resumed"),
    "cancel": ({JobState.PENDING, JobState.RUNNING, JobState.PAUSED}, "cancelled"),
}
_ADDED_COLUMNS = ("phase", "limits", "limits_requested")  # since schema 1, in the order they came
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    requested TEXT,
    description TEXT NOT NULL,
    vm TEXT,
    repository TEXT,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    heartbeat_at TEXT NOT NULL,
    error TEXT,
    exit_code INTEGER,
    result TEXT,
    phase TEXT,
    limits TEXT,
    limits_requested TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
CREATE TABLE IF NOT EXISTS job_disks (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    disk TEXT NOT NULL,
    total INTEGER NOT NULL,
    scanned INTEGER NOT NULL,
    read INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    deduplicated INTEGER NOT NULL,
    zero INTEGER NOT NULL,
    done INTEGER NOT NULL,
    PRIMARY KEY (job_id, disk)
);
"""


def default_job_db() -> Path:
    """``$GENIEVM_JOB_DB``; else ``/var/lib/genievm/jobs.sqlite`` for root, ``$XDG_STATE_HOME/genievm`` or
    ``~/.local/state/genievm/jobs.sqlite`` for anyone else."""
    if value := os.environ.get(JOB_DB_ENV):
        return Path(value)
    if os.geteuid() == 0:
        return Path("/var/lib/genievm/jobs.sqlite")
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "genievm" / "jobs.sqlite"


@dataclass
class DiskRow:
    disk: str
    total: int
    scanned: int
    read: int
    stored: int  # plaintext bytes of the chunks this job stored (new)
    deduplicated: int
    zero: int
    done: bool


@dataclass
class JobRecord:
    """A job as the registry holds it."""

    id: str
    kind: str
    state: JobState
    requested: str | None
    description: str
    vm: str | None
    repository: str | None
    host: str
    pid: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime
    error: str | None
    exit_code: int | None
    result: dict[str, Any] | None
    phase: str | None = None  # plan, transfer, verify or commit, while it runs; the last one after
    limits: dict[str, float | None] | None = None  # MB/s {"read": ..., "write": ...}, None where unlimited
    disks: list[DiskRow] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        for key in ("created_at", "started_at", "finished_at", "heartbeat_at"):
            value = getattr(self, key)
            data[key] = value.isoformat() if value is not None else None
        return data


class JobRegistry:
    """One connection to the registry at ``path``, shared by this process's threads."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_job_db()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(f"job registry {self.path} has schema {version}; this GenieVM knows {SCHEMA_VERSION}")
            with self._db:
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
                for added in _ADDED_COLUMNS if columns else ():  # an older registry: 2 added phase, 3 the limits
                    if added not in columns:
                        self._db.execute(f"ALTER TABLE jobs ADD COLUMN {added} TEXT")
                self._db.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"invalid configuration: jobDb: cannot open job registry {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # the owner's side

    def add(self, job: Job) -> None:
        now = _now()
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO jobs (id, kind, state, description, vm, repository, host, pid, pid_start, "
                "created_at, heartbeat_at, limits) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.kind,
                    job.state.value,
                    job.description,
                    job.vm,
                    job.repository,
                    socket.gethostname(),
                    os.getpid(),
                    process_start(os.getpid()),
                    job.created_at.isoformat(),
                    now,
                    json.dumps(job.control.limits.as_dict()),
                ),
            )

    def update(self, job: Job) -> None:
        """Write the job's state, times, error, result and progress."""
        result = json.dumps(job.result, default=str) if job.result is not None else None
        with self._lock, self._db:
            self._db.execute(
                "UPDATE jobs SET state = ?, phase = ?, limits = ?, started_at = ?, finished_at = ?, "
                "heartbeat_at = ?, error = ?, exit_code = ?, result = ?, "
                "requested = CASE WHEN ? THEN NULL ELSE requested END WHERE id = ?",
                (
                    job.state.value,
                    job.phase,
                    json.dumps(job.control.limits.as_dict()),
                    job.started_at.isoformat() if job.started_at else None,
                    job.finished_at.isoformat() if job.finished_at else None,
                    _now(),
                    job.error,
                    job.exit_code,
                    result,
                    job.finished,
                    job.id,
                ),
            )
            self._write_progress(job)

    def save_progress(self, job: Job) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (_now(), job.id))
            self._write_progress(job)

    def take_request(self, job_id: str) -> str | None:
        """The pause/resume/cancel another process asked for, cleared as it is read."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # read and clear at once: a request set in between is not lost
            try:
                row = self._db.execute("SELECT requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is not None and row[0] is not None:
                    self._db.execute("UPDATE jobs SET requested = NULL WHERE id = ?", (job_id,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return None if row is None or row[0] is None else str(row[0])

    def take_limits(self, job_id: str) -> dict[str, float] | None:
        """The bandwidth limits another process asked for (MB/s by direction; 0: no limit), cleared as read."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT limits_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is not None and row[0] is not None:
                    self._db.execute("UPDATE jobs SET limits_requested = NULL WHERE id = ?", (job_id,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return None if row is None or row[0] is None else dict(json.loads(row[0]))

    # anyone's side

    def get(self, job_id: str) -> JobRecord:
        """A job by its id, or by a prefix of it that names one job."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = ? OR id LIKE ? ESCAPE '\\' ORDER BY id = ? DESC LIMIT 2",
                (job_id, _like_prefix(job_id), job_id),
            ).fetchall()
            if not rows or (len(rows) > 1 and rows[0][0] != job_id):
                raise JobNotFoundError(
                    f"no job {job_id} in the job registry {self.path}"
                    + (" (the prefix names several jobs)" if rows else "")
                )
            return self._record(rows[0])

    def recent(self, *, states: Iterable[JobState] = (), limit: int = 50) -> list[JobRecord]:
        """The newest ``limit`` jobs (in the given states), newest first."""
        wanted = [s.value for s in states]
        where = f"WHERE state IN ({','.join('?' * len(wanted))})" if wanted else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY created_at DESC, id LIMIT ?", (*wanted, limit)
            ).fetchall()
            return [self._record(row) for row in rows]

    def request(self, job_id: str, action: str) -> JobRecord:
        """Ask the job's owner to pause, resume or cancel it; the owner applies it between chunks."""
        allowed, verb = _ACTIONS[action]
        record = self.get(job_id)
        if record.state not in allowed:
            raise JobStateError(f"job {record.id} is {record.state.value}; it cannot be {verb}")
        with self._lock, self._db:
            changed = self._db.execute(
                "UPDATE jobs SET requested = ? WHERE id = ? AND state IN ({})".format(",".join("?" * len(allowed))),
                (action, record.id, *[s.value for s in allowed]),
            ).rowcount
        record = self.get(record.id)
        if not changed:  # its state changed since it was read
            raise JobStateError(f"job {record.id} is {record.state.value}; it cannot be {verb}")
        return record

    def request_limits(self, job_id: str, *, read: float | None = None, write: float | None = None) -> JobRecord:
        """Ask the job's owner to change its bandwidth limits (MB/s; None: as it is, 0: no limit); it does so
        within a poll of its monitor (a fifth of a second)."""
        wanted = {k: v for k, v in (("read", read), ("write", write)) if v is not None}
        record = self.get(job_id)
        if record.finished:
            raise JobStateError(f"job {record.id} is {record.state.value}; its limits cannot be changed")
        with self._lock, self._db:
            row = self._db.execute("SELECT limits_requested FROM jobs WHERE id = ?", (record.id,)).fetchone()
            pending = json.loads(row[0]) if row and row[0] else {}
            self._db.execute(
                "UPDATE jobs SET limits_requested = ? WHERE id = ?", (json.dumps(pending | wanted), record.id)
            )
        return self.get(record.id)

    def sweep_stale(self) -> list[str]:
        """Mark failed every unfinished job whose owner is gone; the ids of those jobs."""
        me = socket.gethostname()
        limit = datetime.now(UTC) - STALE_HEARTBEAT
        with self._lock:
            rows = self._db.execute(
                "SELECT id, host, pid, pid_start, heartbeat_at FROM jobs WHERE state IN (?, ?, ?)",
                (JobState.PENDING.value, JobState.RUNNING.value, JobState.PAUSED.value),
            ).fetchall()
        dead = []
        for job_id, host, pid, pid_start, heartbeat in rows:
            if host == me:
                gone = not process_alive(pid, pid_start)
                why = f"interrupted: its process {pid} ended while the job ran"
            else:
                gone = datetime.fromisoformat(heartbeat) < limit
                why = f"interrupted: its process {pid} on {host} stopped reporting at {heartbeat}"
            if gone:
                with self._lock, self._db:
                    self._db.execute(
                        "UPDATE jobs SET state = ?, finished_at = ?, error = ?, exit_code = 1, requested = NULL "
                        "WHERE id = ? AND state IN (?, ?, ?)",
                        (JobState.FAILED.value, _now(), why, job_id, "pending", "running", "paused"),
                    )
                dead.append(job_id)
        return dead

    # internals

    def _write_progress(self, job: Job) -> None:
        self._db.executemany(
            "INSERT INTO job_disks (job_id, disk, total, scanned, read, stored, deduplicated, zero, done) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, disk) DO UPDATE SET total = excluded.total, "
            "scanned = excluded.scanned, read = excluded.read, stored = excluded.stored, "
            "deduplicated = excluded.deduplicated, zero = excluded.zero, done = excluded.done",
            [
                (job.id, p.disk, p.total, p.scanned, p.read, p.new, p.deduplicated, p.zero, int(p.done))
                for p in job.progress().values()
            ],
        )

    def _record(self, row: tuple[Any, ...]) -> JobRecord:
        data = dict(zip(_COLUMN_NAMES, row, strict=True))
        disks = self._db.execute(
            "SELECT disk, total, scanned, read, stored, deduplicated, zero, done FROM job_disks "
            "WHERE job_id = ? ORDER BY disk",
            (data["id"],),
        ).fetchall()
        return JobRecord(
            id=data["id"],
            kind=data["kind"],
            state=JobState(data["state"]),
            requested=data["requested"],
            description=data["description"],
            vm=data["vm"],
            repository=data["repository"],
            host=data["host"],
            pid=data["pid"],
            created_at=datetime.fromisoformat(data["created_at"]),
            started_at=_time(data["started_at"]),
            finished_at=_time(data["finished_at"]),
            heartbeat_at=datetime.fromisoformat(data["heartbeat_at"]),
            error=data["error"],
            exit_code=data["exit_code"],
            result=json.loads(data["result"]) if data["result"] else None,
            phase=data["phase"],
            limits=json.loads(data["limits"]) if data["limits"] else None,
            disks=[DiskRow(d[0], d[1], d[2], d[3], d[4], d[5], d[6], bool(d[7])) for d in disks],
        )


_COLUMN_NAMES = (
    "id kind state requested description vm repository host pid created_at started_at finished_at "
    "heartbeat_at error exit_code result phase limits"
).split()
_COLUMNS = ", ".join(_COLUMN_NAMES)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
