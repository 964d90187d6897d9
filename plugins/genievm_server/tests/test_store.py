"""The server's tables on SQLite and on a real PostgreSQL: migrations, tokens, policies, runs."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from genievm_server.db import MIGRATIONS, SCHEMA_VERSION, connect, migrate
from genievm_server.errors import NameExistsError, UnknownNameError
from genievm_server.store import Store, digest

from genievm_core.errors import ConfigError


def test_migrate_creates_the_schema_once(database_url: str) -> None:
    engine = connect(database_url)
    assert set(sa.inspect(engine).get_table_names()) >= {"tokens", "policies", "runs", "genievm_server_schema"}
    assert migrate(engine) == SCHEMA_VERSION  # a second open changes nothing
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM genievm_server_schema")).scalar() == SCHEMA_VERSION
    engine.dispose()


def test_servers_started_together_on_a_new_database_migrate_it_once(database_url: str) -> None:
    """Openers of one new database at once: each made the tables it found missing, and all but one failed
    ("already exists"), or a migration ran twice."""
    start, engines, errors = threading.Barrier(8), [], []

    def open_it() -> None:
        start.wait()
        try:
            engines.append(connect(database_url))
        except Exception as exc:  # noqa: BLE001 - every opener's error is the finding
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(engines) == 8
    with engines[0].connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM genievm_server_schema")).scalars().all() == [SCHEMA_VERSION]
    for engine in engines:
        engine.dispose()


def test_a_database_of_a_newer_server_is_refused(database_url: str) -> None:
    engine = connect(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE genievm_server_schema SET version = :v"), {"v": SCHEMA_VERSION + 1})
    engine.dispose()
    with pytest.raises(ConfigError, match=f"schema {SCHEMA_VERSION + 1} is newer than this server's"):
        connect(database_url)


def test_tokens_are_stored_hashed_and_authenticate(database_url: str) -> None:
    store = Store(database_url)
    row, token = store.create_token("operator", "ci")
    with store.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM tokens")).all()]
    assert not any(token in str(value) for r in stored for value in r)  # the token itself is nowhere
    assert any(digest(token) in r for r in stored)
    found = store.authenticate(token)
    assert found is not None and (found.id, found.role, found.name) == (row.id, "operator", "ci")
    assert store.authenticate(token + "x") is None
    assert store.tokens()[0].last_used_at is not None
    store.revoke_token(row.id)
    assert store.authenticate(token) is None
    with pytest.raises(UnknownNameError):
        store.revoke_token(row.id)
    store.close()


def test_policies_round_trip(database_url: str) -> None:
    store = Store(database_url)
    spec = {"name": "nightly", "provider": "lab", "repository": "main", "schedule": {"cron": "0 2 * * *"}}
    store.add_policy("nightly", spec, True)
    with pytest.raises(NameExistsError, match="policy nightly exists"):
        store.add_policy("nightly", spec, True)
    assert store.policy("nightly").spec == spec and store.policy("nightly").enabled
    assert not store.set_enabled("nightly", False).enabled
    store.set_last_slot("nightly", "2026-01-01T02:00:00+00:00")
    assert store.policy("nightly").last_slot == "2026-01-01T02:00:00+00:00"
    assert [p.name for p in store.policies()] == ["nightly"]
    store.delete_policy("nightly")
    with pytest.raises(UnknownNameError, match="no policy nightly"):
        store.policy("nightly")
    store.close()


def test_runs_finish_with_a_time(database_url: str) -> None:
    store = Store(database_url)
    first = store.add_run("nightly", "web01", "backup", "2026-01-01T02:00:00+00:00")
    second = store.add_run("nightly", "web02", "backup", "2026-01-01T02:00:00+00:00", attempt=2)
    assert (first.state, first.attempt, second.attempt) == ("queued", 1, 2)
    store.update_run(first.id, state="succeeded", job_id="abc")
    done = store.run(first.id)
    assert done.finished_at is not None and done.job_id == "abc"
    assert [r.id for r in store.runs(unfinished=True)] == [second.id]
    assert [r.id for r in store.runs(policy="nightly")] == [second.id, first.id]
    store.close()


def test_a_database_of_schema_1_is_migrated(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:  # what the first server made
        sa.Table("genievm_server_schema", sa.MetaData(), sa.Column("version", sa.Integer)).create(conn)
        conn.execute(sa.text("INSERT INTO genievm_server_schema (version) VALUES (1)"))
        MIGRATIONS[0](conn)
    assert "policy_slots" not in sa.inspect(engine).get_table_names()
    engine.dispose()
    store = Store(database_url)
    assert migrate(store.engine) == SCHEMA_VERSION == 2
    store.add_policy("nightly", {"name": "nightly"}, True)
    assert store.slot("nightly", "verify") is None
    store.set_slot("nightly", "verify", "2026-01-01T02:00:00+00:00")
    store.set_slot("nightly", "verify", "2026-01-02T02:00:00+00:00")
    assert store.slot("nightly", "verify") == "2026-01-02T02:00:00+00:00" and store.slot("nightly", "prune") is None
    store.delete_policy("nightly")
    assert store.slot("nightly", "verify") is None
    store.close()
