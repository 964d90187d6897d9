"""The scheduler over real image VMs and a real repository, its tables on SQLite and on PostgreSQL:
missed runs run once, one backup of a VM at a time, failed VMs retried with back-off."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from genievm_server.errors import VMBusyError
from genievm_server.policy import Policy
from genievm_server.scheduler import Scheduler
from genievm_server.service import Service
from genievm_server.settings import ServerSettings
from genievm_server.store import RunRow
from server_support import PASSPHRASE, Site, genievm

from genievm_core.api import GenieVM


@pytest.fixture
def service(site: Site, database_url: str) -> Iterator[Service]:
    settings = ServerSettings.model_validate(
        site.settings | {"database": database_url, "lock_wait": 60, "retry_backoff": 0}
    )
    service = Service(settings)
    yield service
    service.close()


def _policy(service: Service, **fields: object) -> Policy:
    policy = Policy.model_validate(
        {"name": "hourly", "provider": "lab", "repository": "main", "schedule": {"cron": "0 * * * *"}, "vms": ["web*"]}
        | fields
    )
    service.store.add_policy(policy.name, policy.model_dump(mode="json", exclude={"enabled"}), True)
    return policy


def _settled(service: Service, scheduler: Scheduler, count: int, timeout: float = 120) -> list[RunRow]:
    """Tick until ``count`` runs have finished and none is left; the runs, oldest first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scheduler.tick()
        runs = service.store.runs(limit=1000)
        if len(runs) >= count and all(r.finished_at for r in runs):
            return sorted(runs, key=lambda r: r.id)
        time.sleep(0.2)
    raise AssertionError(f"runs did not settle: {service.store.runs(limit=1000)}")


def test_missed_runs_run_once(service: Service) -> None:
    _policy(service)
    five_hours_ago = (datetime.now(UTC) - timedelta(hours=5)).isoformat()
    service.store.set_last_slot("hourly", five_hours_ago)  # the server was down for five schedule times
    scheduler = Scheduler(service)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    scheduler.tick()
    runs = _settled(service, scheduler, 2)
    assert [(r.vm, r.state) for r in runs] == [("web01", "succeeded"), ("web02", "succeeded")]
    slot = datetime.fromisoformat(service.store.policy("hourly").last_slot or "")
    assert slot in (hour, datetime.now(UTC).replace(minute=0, second=0, microsecond=0))  # the latest one
    scheduler.tick()  # nothing is due until the next hour
    assert len(service.store.runs(limit=1000)) == 2
    assert service.metrics.render().count(b'genievm_jobs_total{kind="backup",result="succeeded"} 2.0') == 1


def test_a_disabled_policy_does_not_run(service: Service) -> None:
    _policy(service)
    service.store.set_last_slot("hourly", (datetime.now(UTC) - timedelta(hours=2)).isoformat())
    service.store.set_enabled("hourly", False)
    Scheduler(service).tick()
    assert service.store.runs() == []


def test_one_backup_of_a_vm_at_a_time(service: Service, site: Site) -> None:
    _policy(service, vms=["web01"])
    scheduler = Scheduler(service)
    with GenieVM(job_db=Path(site.settings["job_db"])) as other:  # another client holds the repository
        repo = other.open_repository(site.settings["repositories"]["main"]["url"], passphrase=PASSPHRASE)
        with repo.lock("exclusive", "a test's maintenance"):
            scheduler.run_now("hourly")
            scheduler.run_now("hourly")
            scheduler.tick()
            states = sorted(r.state for r in service.store.runs())
            assert states == ["queued", "running"]  # the second waits for the first
            assert scheduler.queue_length() == 1
            with pytest.raises(VMBusyError, match="VM web01 has a backup running"):
                service.start_backup("lab", "web01", "main")
            scheduler.tick()
            assert sorted(r.state for r in service.store.runs()) == ["queued", "running"]
    runs = _settled(service, scheduler, 2)
    assert [r.state for r in runs] == ["succeeded", "succeeded"]
    first, second = (service.job(r.job_id or "") for r in runs)
    assert first.finished_at and second.started_at and first.finished_at <= second.started_at
    assert b"genievm_scheduler_queue_length 0.0" in service.metrics.render()


def test_a_failed_vm_is_retried_with_back_off(site: Site, database_url: str, tmp_path: Path) -> None:
    site.settings["providers"]["lab"]["options"]["vms"]["gone01"] = {"vda": str(tmp_path / "missing.img")}
    settings = ServerSettings.model_validate(site.settings | {"database": database_url, "retry_backoff": 0.5})
    service = Service(settings)
    try:
        _policy(service, vms=["gone01"], retries=2)
        scheduler = Scheduler(service)
        scheduler.run_now("hourly")
        runs = _settled(service, scheduler, 3)
        assert [(r.attempt, r.state) for r in runs] == [(1, "failed"), (2, "failed"), (3, "failed")]
        assert all("missing.img" in (r.error or "") for r in runs)
        gaps = [
            datetime.fromisoformat(b.not_before or "") - datetime.fromisoformat(a.finished_at or "")
            for a, b in zip(runs, runs[1:], strict=False)
        ]
        assert timedelta(seconds=0.4) < gaps[0] < timedelta(seconds=5)  # 0.5 s, then 1 s: doubled
        assert timedelta(seconds=0.9) < gaps[1] < timedelta(seconds=5)
        time.sleep(1.5)
        scheduler.tick()
        assert len(service.store.runs()) == 3  # no fourth attempt
    finally:
        service.close()


@pytest.mark.parametrize("limit", ["policy", "repository"])
def test_concurrent_backups_are_limited(site: Site, database_url: str, limit: str) -> None:
    """One backup at a time of the policy (its max_concurrent) or of the repository (the settings')."""
    if limit == "repository":
        site.settings["repositories"]["main"]["max_concurrent"] = 1
    settings = ServerSettings.model_validate(
        site.settings | {"database": database_url, "lock_wait": 60, "max_concurrent_jobs": 4}
    )
    service = Service(settings)
    try:
        _policy(service, vms=[], **({"max_concurrent": 1} if limit == "policy" else {}))
        scheduler = Scheduler(service)
        with GenieVM(job_db=Path(site.settings["job_db"])) as other:
            repo = other.open_repository(site.settings["repositories"]["main"]["url"], passphrase=PASSPHRASE)
            with repo.lock("exclusive", "a test's maintenance"):
                scheduler.run_now("hourly")
                scheduler.tick()
                scheduler.tick()
                assert sorted(r.state for r in service.store.runs()) == ["queued", "queued", "running"]
        runs = _settled(service, scheduler, 3)
        assert sorted(r.vm for r in runs if r.state == "succeeded") == ["db01", "web01", "web02"]
        jobs = sorted((service.job(r.job_id or "") for r in runs), key=lambda j: j.started_at or j.created_at)
        for before, after in zip(jobs, jobs[1:], strict=False):
            assert before.finished_at and after.started_at and before.finished_at <= after.started_at
    finally:
        service.close()


def test_verify_and_prune_on_their_schedules(service: Service, site: Site) -> None:
    _policy(
        service,
        vms=["web01"],
        backup={"keepLast": 1},
        verify={"cron": "0 4 * * *", "read_data": True},
        prune={"cron": "30 4 * * *"},
    )
    for _ in range(2):
        job = service.start_backup("lab", "web01", "main")
        assert job.wait(120) and job.state.value == "succeeded"
    now = datetime.now(UTC)
    service.store.set_last_slot("hourly", now.isoformat())  # no backup is due
    for kind in ("verify", "prune"):
        service.store.set_slot("hourly", kind, (now - timedelta(days=2)).isoformat())
    scheduler = Scheduler(service)
    scheduler.tick()
    runs = _settled(service, scheduler, 2)
    assert [(r.kind, r.vm, r.state) for r in runs] == [("verify", "*", "succeeded"), ("prune", "*", "succeeded")]
    verify, prune = (service.job(r.job_id or "") for r in runs)
    assert (verify.kind, prune.kind) == ("verify", "prune")
    repo = service.repository("main")
    assert len(repo.manifests("web01")) == 1  # keepLast 1: the older backup is gone
    scheduler.tick()
    assert len(service.store.runs()) == 2  # each ran once for the two days it missed


def test_a_policy_copies_its_backups_into_another_repository_on_its_schedule(site: Site, tmp_path: Path) -> None:
    """``copy_to``: the backups of the policy's VMs (not the others') copied, encrypted anew, and verifiable."""
    offsite_passphrase = tmp_path / "offsite-passphrase"
    offsite_passphrase.write_text("the offsite passphrase\n")
    genievm("repo", "init", str(tmp_path / "offsite"), "--passphrase-file", str(offsite_passphrase))
    repositories = site.settings["repositories"] | {
        "offsite": {"url": str(tmp_path / "offsite"), "passphrase_file": str(offsite_passphrase)}
    }
    settings = ServerSettings.model_validate(
        site.settings | {"repositories": repositories, "database": site.database, "lock_wait": 60}
    )
    service = Service(settings)
    try:
        _policy(service, vms=["web01"], copy_to={"cron": "0 5 * * *", "repository": "offsite"})
        for vm in ("web01", "db01"):  # db01 is not the policy's: it stays where it is
            job = service.start_backup("lab", vm, "main")
            assert job.wait(120) and job.state.value == "succeeded"
        now = datetime.now(UTC)
        service.store.set_last_slot("hourly", now.isoformat())  # no backup is due
        service.store.set_slot("hourly", "copy", (now - timedelta(days=1)).isoformat())
        scheduler = Scheduler(service)
        scheduler.tick()
        (run,) = _settled(service, scheduler, 1)
        assert (run.kind, run.vm, run.state) == ("copy", "*", "succeeded")
        record = service.job(run.job_id or "")
        assert record.kind == "copy" and record.result is not None
        assert (record.result["backups_copied"], record.result["chunks_sent"]) == (1, 2)
        offsite = service.repository("offsite")
        assert [m.vm.name for m in offsite.manifests()] == ["web01"]
        verify = service.genievm.verify_job(offsite, offsite.manifests(), read_data=True)
        assert service.genievm.run(verify).state.value == "succeeded"
    finally:
        service.close()


def test_copy_to_its_own_repository_is_refused() -> None:
    with pytest.raises(ValueError, match="copy_to.repository: main is the policy's own repository"):
        Policy.model_validate(
            {"name": "p", "provider": "lab", "repository": "main", "schedule": {"cron": "0 * * * *"},
             "copy_to": {"cron": "0 5 * * *", "repository": "main"}}  # fmt: skip
        )
