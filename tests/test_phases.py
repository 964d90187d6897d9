"""Backup, restore and prune run in phases (plan, transfer, verify, commit) that the job and the
registry show; each phase is a function of its own that the next layers can call."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support import CHUNK, random_bytes, write_image

from genievm_core.api import BackupConfig, GenieVM, RestoreConfig, RetentionPolicy
from genievm_core.engine import JobControl
from genievm_core.jobs import Job, JobRegistry, JobState
from genievm_core.jobs.backup import commit_backup, describe_for_backup, plan_backup, transfer_backup
from genievm_core.jobs.registry import SCHEMA_VERSION


def phases_of(genievm: GenieVM, job: Job) -> list[str]:
    seen: list[str] = []
    job.add_listener(lambda j: seen.append(j.phase) if j.phase and (not seen or seen[-1] != j.phase) else None)
    genievm.run(job)
    assert job.state is JobState.SUCCEEDED, job.error
    return seen


def test_each_job_reports_its_phases_and_the_registry_keeps_them(tmp_path: Path) -> None:
    image = write_image(tmp_path / "vda.img", 8 * CHUNK, [(0, random_bytes(3 * CHUNK, 1))])
    with GenieVM(job_db=tmp_path / "jobs.sqlite") as genievm:
        repo = genievm.init_repository(str(tmp_path / "repo"), passphrase=None, chunk_size=CHUNK)
        config = BackupConfig(vm_id="vm1", backup_path=repo.url, provider_options={"vms": {"vm1": {"vda": str(image)}}})
        backup = genievm.backup_job(config, repo)
        assert phases_of(genievm, backup) == ["plan", "transfer", "commit"]
        target = RestoreConfig(vm_id="vm1", backup_path=repo.url, restore_path=tmp_path / "o")
        restore = genievm.restore_job(target, repo)
        assert phases_of(genievm, restore) == ["plan", "transfer", "verify", "commit"]
        prune = genievm.prune_job(repo, RetentionPolicy(keep_last=1))
        assert phases_of(genievm, prune) == ["plan", "commit"]
        dry = genievm.prune_job(repo, RetentionPolicy(keep_last=1), dry_run=True)
        assert phases_of(genievm, dry) == ["plan"]
        assert genievm.job(backup.id).phase == "commit"  # the last phase it entered, as the registry saw it


def test_the_phases_compose_and_nothing_is_visible_before_the_commit(tmp_path: Path) -> None:
    image = write_image(tmp_path / "vda.img", 8 * CHUNK, [(0, random_bytes(3 * CHUNK, 2))])
    with GenieVM(job_db=tmp_path / "jobs.sqlite") as genievm:
        repo = genievm.init_repository(str(tmp_path / "repo"), passphrase=None, chunk_size=CHUNK)
        config = BackupConfig(vm_id="vm1", backup_path=repo.url, provider_options={"vms": {"vm1": {"vda": str(image)}}})
        provider = genievm.host.providers.get("image")(config.provider_options)
        vm, disks = describe_for_backup(provider, config)
        with repo.lock("shared", "test"):
            plan = plan_backup(repo, config, vm, disks)
            cbt_sources = genievm.host.cbt_sources.by_priority()
            transfers = transfer_backup(plan, provider, repo, config, cbt_sources, None, JobControl(), 2)
            assert repo.backup_ids() == []  # chunks are stored, but no backup exists yet
            manifest = commit_backup(plan, transfers, repo)
        provider.close()
        assert repo.backup_ids() == [plan.backup_id] == [manifest.backup_id]
        assert manifest.disks[0].stats.bytes_new == 3 * CHUNK


def test_a_registry_of_schema_1_gains_the_phase_column(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    JobRegistry(db).close()
    with sqlite3.connect(db) as conn:  # as GenieVM 0.1 left it
        for column in ("phase", "limits", "limits_requested"):
            conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        conn.execute("PRAGMA user_version = 1")
    image = write_image(tmp_path / "vda.img", 4 * CHUNK, [(0, random_bytes(CHUNK, 3))])
    with GenieVM(job_db=db) as genievm:
        repo = genievm.init_repository(str(tmp_path / "repo"), passphrase=None, chunk_size=CHUNK)
        config = BackupConfig(vm_id="vm1", backup_path=repo.url, provider_options={"vms": {"vm1": {"vda": str(image)}}})
        job = genievm.run(genievm.backup_job(config, repo))
        assert genievm.job(job.id).phase == "commit"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_the_last_chunks_are_made_durable_while_the_provider_ends_its_point_in_time(tmp_path: Path) -> None:
    """The transfer does not wait for the chunks' fsyncs to end the provider's snapshot or backup job (a KVM
    backup job takes 0.1–0.3 s to end), but it ends only once every chunk is durable."""
    image = write_image(tmp_path / "vda.img", 8 * CHUNK, [(0, random_bytes(3 * CHUNK, 4))])
    events: list[str] = []
    with GenieVM(job_db=tmp_path / "jobs.sqlite") as genievm:
        repo = genievm.init_repository(str(tmp_path / "repo"), passphrase=None, chunk_size=CHUNK)
        config = BackupConfig(vm_id="vm1", backup_path=repo.url, provider_options={"vms": {"vm1": {"vda": str(image)}}})
        provider = genievm.host.providers.get("image")(config.provider_options)
        open_backup, flush = provider.open_backup, repo.storage.flush

        @contextlib.contextmanager
        def watched_backup(vm: Any, request: Any) -> Iterator[Any]:
            with open_backup(vm, request) as session:
                yield session
            events.append("point in time ended")

        def slow_flush() -> None:
            time.sleep(0.3)  # fsyncs that take a while
            flush()
            events.append("chunks durable")

        provider.open_backup = watched_backup
        repo.storage.flush = slow_flush
        vm, disks = describe_for_backup(provider, config)
        with repo.lock("shared", "test"):
            plan = plan_backup(repo, config, vm, disks)
            transfer_backup(plan, provider, repo, config, genievm.host.cbt_sources.by_priority(), None, JobControl(), 2)
            events.append("transfer returned")
        provider.close()
    assert events == ["point in time ended", "chunks durable", "transfer returned"]
