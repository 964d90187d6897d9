"""The server's own tables (tokens, policies, runs) in SQLite or PostgreSQL, through SQLAlchemy Core.

Jobs themselves stay in the core's job registry (the CLI's ``genievm jobs`` sees them); these tables hold
what only the server knows. ``migrate`` brings a database to ``SCHEMA_VERSION``, one migration at a time,
each in its own transaction, and refuses a database made by a newer server. Times are ISO 8601 UTC text.

Schema 2 (1 lacked ``policy_slots``)::

    genievm_server_schema(version)
    tokens(id, name, role, digest, created_at, last_used_at)
    policies(name, enabled, spec, created_at, updated_at, last_slot)
    policy_slots(policy, kind, last_slot)
    runs(id, policy, vm, kind, slot, state, attempt, job_id, error, created_at, finished_at, not_before)
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from genievm_core.errors import ConfigError

__all__ = ["SCHEMA_VERSION", "connect", "metadata", "migrate", "policies", "runs", "slots", "tokens"]

metadata = sa.MetaData()
_version = sa.Table("genievm_server_schema", metadata, sa.Column("version", sa.Integer, nullable=False))
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),  # SHA-256 of the token, never the token
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("last_used_at", sa.String(40)),
)
policies = sa.Table(
    "policies",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # the policy as JSON
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
    sa.Column("last_slot", sa.String(40)),  # the latest schedule time already handled
)
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("policy", sa.String(64), nullable=False, index=True),
    sa.Column("vm", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("slot", sa.String(40), nullable=False),  # the schedule time it is for
    sa.Column("state", sa.String(20), nullable=False, index=True),  # queued, running, succeeded, failed, ...
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("job_id", sa.String(32)),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("not_before", sa.String(40)),  # a retry waits until then
)


slots = sa.Table(
    "policy_slots",
    metadata,
    sa.Column("policy", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(20), primary_key=True),  # verify, prune (a backup's is policies.last_slot)
    sa.Column("last_slot", sa.String(40), nullable=False),
)


def _v1(conn: Connection) -> None:
    for table in (tokens, policies, runs):
        table.create(conn)


def _v2(conn: Connection) -> None:
    """Verify and prune schedules: the latest time each has handled."""
    slots.create(conn)


MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(url: str) -> Engine:
    """An engine for ``url``, its schema migrated to this server's."""
    try:
        sqlite = sa.engine.make_url(url).get_backend_name() == "sqlite"
        # SQLite: wait for a writer of another thread or process rather than fail at once
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"timeout": 30} if sqlite else {})
        migrate(engine)
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError(
            f"invalid configuration: database: cannot open {_safe(url)}: {getattr(exc, 'orig', None) or exc}"
        ) from None
    except ModuleNotFoundError as exc:  # e.g. psycopg for PostgreSQL
        raise ConfigError(f"invalid configuration: database: {_safe(url)} needs {exc.name} (not installed)") from None
    return engine


def migrate(engine: Engine) -> int:
    """Apply the migrations the database lacks, in one transaction; its version before. Servers started
    together on one database take turns (``hold_schema_lock``): one migrates, the others find it done."""
    with engine.begin() as conn:
        hold_schema_lock(conn)
        _version.create(conn, checkfirst=True)
        found = conn.execute(sa.select(_version.c.version)).scalar()
        if found is None:
            conn.execute(_version.insert().values(version=0))
            found = 0
        if found > SCHEMA_VERSION:
            raise ConfigError(
                f"invalid configuration: database: schema {found} is newer than this server's {SCHEMA_VERSION}"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(_version.update().values(version=version))
    return int(found)


def hold_schema_lock(conn: Connection) -> None:
    """Hold, until ``conn``'s transaction ends, the lock every opener takes before it reads or changes the
    schema: PostgreSQL's advisory lock, SQLite's write lock (``BEGIN IMMEDIATE``)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('genievm_server_schema'))"))
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the driver's own BEGIN comes only before a write, not DDL


def _safe(url: str) -> str:
    """The URL without its password."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)
