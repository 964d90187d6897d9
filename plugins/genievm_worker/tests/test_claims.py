"""The guarantees below the workers, on the real services: a job is claimed by one worker at a time, again only
once its lease ran out, never once it ended (shared job state on SQLite and on PostgreSQL); a VM's lock and a
cap's slots in a real Redis; a broker that does not answer is one line and exit 36, nothing recorded."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from genievm_worker.coordination import Coordinator, vm_key
from genievm_worker.state import SharedJobs
from worker_support import Env, free_port, postgres_database

OPENERS = 8


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database, on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite'}"
        return
    with postgres_database(request.getfixturevalue("postgres")) as url:
        yield url


@pytest.fixture
def shared(fresh_url: str) -> Iterator[SharedJobs]:
    jobs = SharedJobs(fresh_url)
    yield jobs
    jobs.close()


def test_hosts_opening_a_new_database_at_once_make_one_schema(fresh_url: str) -> None:
    """Three workers and a submitting CLI, started together on a new database, all open it (a CI run had one
    fail with 'relation "genievm_worker_schema" already exists'), and it has one schema version."""
    start, opened, errors = threading.Barrier(OPENERS), [], []

    def open_it() -> None:
        start.wait()
        try:
            opened.append(SharedJobs(fresh_url))
        except Exception as exc:  # noqa: BLE001 - every opener's error is the finding
            errors.append(exc)

    for round_ in range(3):  # the window is a few milliseconds wide: open a new schema three times
        threads = [threading.Thread(target=open_it) for _ in range(OPENERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == [] and len(opened) == OPENERS * (round_ + 1)
        with opened[0].engine.begin() as conn:
            assert conn.execute(sa.text("SELECT version FROM genievm_worker_schema")).scalars().all() == [1]
            if round_ < 2:
                for table in ("worker_attempts", "worker_jobs", "genievm_worker_schema"):
                    conn.execute(sa.text(f"DROP TABLE {table}"))
    for jobs in opened:
        jobs.close()


def test_one_claim_at_a_time_and_none_after_the_end(shared: SharedJobs) -> None:
    shared.add("job1", "backup", "q", {"kind": "backup", "vm": "web01"}, provider="image", vm="web01", repository="r")
    first = shared.claim("job1", "w1", lease=60)
    assert (first.outcome, first.attempt, first.spec) == ("run", 1, {"kind": "backup", "vm": "web01"})
    assert shared.claim("job1", "w2", lease=60).outcome == "busy"  # a redelivery while w1 holds its lease
    assert shared.heartbeat("job1", "w1", 60, phase="transfer", progress=[]) is True
    shared.finish("job1", "w1", "succeeded", phase="commit", progress=[], result={"backup_id": "b1"}, error=None,
                  exit_code=None)  # fmt: skip
    assert shared.claim("job1", "w2", lease=60).outcome == "done"  # a redelivery of a job that ended
    assert shared.get("job1").state.value == "succeeded" and shared.get("job1").host == "w1"
    assert shared.claim("nothing", "w1", lease=60).outcome == "gone"


def test_a_dead_workers_job_is_claimed_again_once_its_lease_ran_out(shared: SharedJobs) -> None:
    shared.add("job2", "backup", "q", {"kind": "backup"}, provider="image", vm="web02", repository="r")
    assert shared.claim("job2", "w1", lease=0.5).outcome == "run"
    time.sleep(1)  # w1 died: no heartbeat
    second = shared.claim("job2", "w2", lease=60)
    assert (second.outcome, second.attempt) == ("run", 2)
    assert shared.heartbeat("job2", "w1", 60, phase=None, progress=[]) is False  # w1's copy learns it lost it
    assert [(a.worker, a.ended_at is None) for a in shared.attempts("job2")] == [("w1", True), ("w2", True)]


def test_a_vm_lock_and_cap_slots_hold_across_workers(redis_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    coordinator = Coordinator(redis_url, lease=0.6)
    try:
        key = vm_key("image", f"web-{tag}")
        assert coordinator.lock_vm(key, "a") is True
        assert coordinator.lock_vm(key, "b") is False
        coordinator.unlock_vm(key, "b")  # not b's: it stays a's
        assert coordinator.lock_vm(key, "b") is False
        time.sleep(1)  # a died: its lock expired
        assert coordinator.lock_vm(key, "b") is True
        caps = {f"repository:/srv/{tag}": 2, f"host:esx-{tag}": 5}
        taken = [coordinator.take_slots(caps, job) for job in ("j1", "j2", "j3")]
        assert taken == [None, None, f"repository:/srv/{tag}"]
        assert sorted(coordinator.holders(f"host:esx-{tag}")) == ["j1", "j2"]  # j3 took none: all or nothing
        coordinator.release_slots(caps, "j1")
        assert coordinator.take_slots(caps, "j3") is None
    finally:
        coordinator.close()


def test_an_unreachable_broker_is_one_line_and_exit_36(tmp_path: Path) -> None:
    broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = Env(tmp_path, broker, f"sqlite:///{tmp_path / 'shared.sqlite'}")
    image = tmp_path / "web01.img"
    image.write_bytes(b"\1" * 4096)
    out = env.genievm("jobs", "submit", "backup", "--vm", "web01", "--disk", f"vda={image}", "--repo",
                      str(tmp_path / "repo"), check=False)  # fmt: skip
    assert out.returncode == 36
    assert out.stderr.splitlines() == [
        f"genievm: error: the broker at {broker} is unreachable "
        f"(Error 111 connecting to {broker[8:-2]}. Connection refused.): job not queued"
    ]
    assert SharedJobs(env.database).recent() == []
