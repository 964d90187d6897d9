"""Garbage collection: the grace period, objects the store will not delete yet, and GC beside a running backup."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jobs_support import MIB, env_with, init_repo, scanned, start_backup, wait_for_job
from structlog.testing import capture_logs
from support import backup_vm, genievm_path, open_repo, random_bytes, write_image

from genievm_core.errors import ObjectLockedError
from genievm_core.jobs import JobManager, JobRegistry, JobState, PruneJob, prune_vms, run_verify
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import StorageTarget
from genievm_core.repository import Repository
from genievm_core.repository.gc import LEDGER_KEY, prune_repository
from genievm_core.repository.retention import RetentionPolicy
from genievm_core.repository.storage import open_storage

CHUNK = 65536
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
KEEP_ONE = RetentionPolicy(keep_last=1)


class RetentionLockedStorageDouble:
    """A real filesystem target whose ``delete`` refuses the keys in ``locked``, as S3 Object Lock would.

    A test double: the S3 plugin that raises ObjectLockedError for real is built elsewhere.
    """

    def __init__(self, inner: StorageTarget, locked: set[str]) -> None:
        self.inner = inner
        self.url = inner.url
        self.locked = locked

    def delete(self, key: str) -> None:
        if key in self.locked:
            raise ObjectLockedError(f"storage {self.url}: object {key} is under retention until 2027-01-01T00:00:00Z")
        self.inner.delete(key)

    def put(self, key: str, data: bytes | bytearray) -> None:
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def close(self) -> None:
        self.inner.close()


def two_backups(host: PluginHost, repo: Repository, tmp_path: Path) -> tuple[Any, Any, set[str]]:
    """web01 backed up twice with 4 chunks rewritten between: the chunk keys only the first backup names."""
    image = write_image(tmp_path / "vda.img", 8 * CHUNK, [(0, random_bytes(8 * CHUNK, 1))])
    first = backup_vm(host, repo, "web01", {"vda": image})
    with open(image, "r+b") as f:
        f.write(random_bytes(4 * CHUNK, 2))
    second = backup_vm(host, repo, "web01", {"vda": image})
    old, new = repo.disk_index(first.disks[0]), repo.disk_index(second.disks[0])
    only_first = {repo.chunk_key(c) for c in old.stored_ids() - new.stored_ids()}
    assert len(only_first) == 4
    return first, second, only_first


def test_unreferenced_objects_wait_for_the_grace_period(host: PluginHost, new_repo: Any, tmp_path: Path) -> None:
    repo, _ = new_repo()
    first, second, only_first = two_backups(host, repo, tmp_path)
    garbage = only_first | {first.disks[0].index}
    hour = timedelta(hours=1)

    report = prune_vms(repo, KEEP_ONE, grace=hour, now=T0)
    assert report.removed_backups == [first.backup_id] and report.deleted == []
    assert report.kept_by_grace == report.unreferenced == len(garbage)
    assert [m.backup_id for m in repo.manifests()] == [second.backup_id]

    later = prune_repository(repo, grace=hour, now=lambda: T0 + timedelta(minutes=59))
    assert later.deleted == [] and later.kept_by_grace == len(garbage)
    dry = prune_repository(repo, grace=hour, dry_run=True, now=lambda: T0 + hour)
    assert set(dry.deleted) == garbage and all(repo.storage.exists(k) for k in garbage)

    done = prune_repository(repo, grace=hour, now=lambda: T0 + hour)
    assert set(done.deleted) == garbage and done.kept_by_grace == 0
    assert not any(repo.storage.exists(k) for k in garbage)
    assert all(r.ok for r in run_verify(host, repo, repo.manifests(), read_data=True))


def test_prune_leaves_no_empty_folder_of_a_pruned_backup(host: PluginHost, new_repo: Any, tmp_path: Path) -> None:
    repo, path = new_repo()
    first, second, _ = two_backups(host, repo, tmp_path)
    report = prune_vms(repo, KEEP_ONE, grace=timedelta(0))
    assert report.removed_backups == [first.backup_id]
    assert [p.name for p in (path / "indexes").iterdir()] == [second.backup_id]
    empty = [p for p in path.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert empty == [], "the folders of the pruned backup's objects went with them"


def test_a_chunk_that_becomes_referenced_again_leaves_the_ledger(
    host: PluginHost, new_repo: Any, tmp_path: Path
) -> None:
    repo, _ = new_repo()
    image = write_image(tmp_path / "vda.img", 4 * CHUNK, [(0, random_bytes(4 * CHUNK, 5))])
    first = backup_vm(host, repo, "web01", {"vda": image})
    repo.storage.delete(f"manifests/{first.backup_id}")  # as if the backup had been interrupted before its manifest
    prune_repository(repo, grace=timedelta(hours=1), now=lambda: T0)
    assert repo.storage.exists(LEDGER_KEY)
    again = backup_vm(host, repo, "web01", {"vda": image})  # re-uses the chunks: they are referenced again
    assert again.stats.chunks_new == 0
    report = prune_repository(repo, grace=timedelta(hours=1), now=lambda: T0 + timedelta(days=1))
    assert report.deleted == [first.disks[0].index]  # the orphan index only; every chunk is named again
    assert all(r.ok for r in run_verify(host, repo, [again], read_data=True))


def test_objects_under_retention_are_reported_and_the_rest_goes(
    host: PluginHost, new_repo: Any, tmp_path: Path
) -> None:
    plain, path = new_repo()
    first, second, only_first = two_backups(host, plain, tmp_path)
    stuck = sorted(only_first)[0]
    storage = RetentionLockedStorageDouble(open_storage(host, str(path)), {stuck})
    repo = Repository.open(storage)

    report = prune_vms(repo, KEEP_ONE, grace=timedelta(0))
    assert report.removed_backups == [first.backup_id]
    assert report.not_deletable == [stuck]
    assert set(report.deleted) == (only_first - {stuck}) | {first.disks[0].index}
    assert report.to_json()["not_deletable"] == 1 and report.to_json()["not_deletable_keys"] == [stuck]
    assert storage.exists(stuck)

    storage.locked = set()  # the retention ran out: the next collection deletes it
    report = prune_repository(repo, grace=timedelta(0))
    assert report.deleted == [stuck] and report.not_deletable == []
    assert [m.backup_id for m in repo.manifests()] == [second.backup_id]
    assert not storage.exists(stuck)


def test_a_manifest_under_retention_keeps_its_backup_whole(host: PluginHost, new_repo: Any, tmp_path: Path) -> None:
    plain, path = new_repo()
    first, second, only_first = two_backups(host, plain, tmp_path)
    storage = RetentionLockedStorageDouble(open_storage(host, str(path)), {f"manifests/{first.backup_id}"})
    repo = Repository.open(storage)
    report = prune_vms(repo, KEEP_ONE, grace=timedelta(0))
    assert report.removed_backups == [] and report.not_deletable == [f"manifests/{first.backup_id}"]
    assert report.deleted == []
    assert all(r.ok for r in run_verify(host, repo, [first, second], read_data=True))


def test_gc_beside_a_running_backup_loses_nothing(host: PluginHost, tmp_path: Path) -> None:
    """Prune and GC start while another VM's backup runs in its own process; everything verifies after."""
    db, path = Path(os.environ["GENIEVM_JOB_DB"]), tmp_path / "repo"
    env = env_with(db)
    init_repo(path, env, chunk_size=CHUNK)
    repo = open_repo(host, path)
    first, _second, only_first = two_backups(host, repo, tmp_path)
    big = write_image(tmp_path / "big.img", 8 * MIB, [(0, random_bytes(8 * MIB, 7))])
    registry = JobRegistry(db)
    backup = start_backup(path, big, env, level=19)
    wait_for_job(registry, lambda r: r.state is JobState.RUNNING and scanned(r) > 0, backup)

    report = prune_vms(repo, KEEP_ONE, ["web01"], grace=timedelta(0), lock_wait=300)

    # the sweep waited for the backup: its manifest was committed before anything was deleted
    assert [m.vm.id for m in repo.manifests()].count("v") == 1
    out, err = backup.communicate(timeout=300)
    assert backup.returncode == 0, err
    assert report.removed_backups == [first.backup_id]
    assert set(report.deleted) == only_first | {first.disks[0].index}
    reports = run_verify(host, repo, repo.manifests(), read_data=True)
    assert reports and all(r.ok for r in reports), [p for r in reports for p in r.problems]
    verify = subprocess.run(
        [genievm_path(), "verify", "--repo", str(path), "--read-data"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr


def test_a_prune_waiting_for_running_backups_can_be_cancelled(host: PluginHost, new_repo: Any, tmp_path: Path) -> None:
    repo, _ = new_repo()
    first, second, _only_first = two_backups(host, repo, tmp_path)
    with JobManager(JobRegistry(tmp_path / "jobs.sqlite")) as manager:
        with repo.lock("shared", "a backup that runs"):  # the sweep cannot start while this is held
            job = PruneJob(repo, KEEP_ONE, grace=timedelta(0), lock_wait=600)
            with capture_logs() as logs:
                manager.submit(job)
                while not any(e["event"] == "gc.waiting_for_lock" for e in logs):  # marked, now waiting
                    job.wait(0.01)
            job.cancel()
            assert job.wait(60)
    assert job.state is JobState.CANCELLED
    assert [m.backup_id for m in repo.manifests()] == [first.backup_id, second.backup_id]  # nothing deleted
