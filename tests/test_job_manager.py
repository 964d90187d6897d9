"""JobManager: background jobs up to a limit, cancel before start, and real backups recorded in the registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from job_owner import STEPS, SteppedJob
from support import CLIResult, random_bytes, write_image

from genievm_core.errors import JobStateError
from genievm_core.jobs import BackupJob, JobManager, JobRegistry, JobState
from genievm_core.models.config import BackupConfig
from genievm_core.plugin import PluginHost

Run = Callable[..., CLIResult]


def finish(job: SteppedJob) -> None:
    for _ in range(STEPS):
        job.gate.put(None)
    assert job.wait(60)


def test_at_most_the_limit_run_at_once_and_a_pending_job_can_be_cancelled(tmp_path: Path) -> None:
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    with JobManager(registry, max_concurrent=2) as manager:
        jobs = [SteppedJob() for _ in range(4)]
        for job in jobs:
            manager.submit(job)
        while any(j.state is JobState.PENDING for j in jobs[:2]):
            jobs[0].wait(0.01)
        assert [j.state for j in jobs] == [JobState.RUNNING, JobState.RUNNING, JobState.PENDING, JobState.PENDING]
        assert registry.get(jobs[2].id).state is JobState.PENDING
        jobs[2].cancel()  # never starts
        with pytest.raises(JobStateError):
            jobs[2].pause()
        finish(jobs[0])
        while jobs[3].state is JobState.PENDING:  # the freed slot goes to the next job that is not cancelled
            jobs[3].wait(0.01)
        assert jobs[1].state is JobState.RUNNING and jobs[2].state is JobState.CANCELLED
        finish(jobs[1])
        finish(jobs[3])
    states = {r.id: r.state for r in registry.recent()}
    assert [states[j.id] for j in jobs] == [JobState.SUCCEEDED] * 2 + [JobState.CANCELLED, JobState.SUCCEEDED]
    assert registry.get(jobs[2].id).started_at is None


def test_backups_in_the_background_are_recorded(host: PluginHost, new_repo: Any, tmp_path: Path) -> None:
    repo, _ = new_repo()
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    jobs = []
    with JobManager(registry, max_concurrent=2) as manager:
        for vm in ("web01", "db01", "mail01"):
            image = write_image(tmp_path / f"{vm}.img", 10 * 65536, [(65536, random_bytes(5 * 65536, len(vm)))])
            config = BackupConfig(vm_id=vm, backup_path=repo.url, provider_options={"vms": {vm: {"vda": str(image)}}})
            jobs.append(BackupJob(host, config, repo, workers=2))
            manager.submit(jobs[-1])
    for job in jobs:
        record = registry.get(job.id)
        assert record.state is JobState.SUCCEEDED and record.vm == job.vm
        assert job.manifest is not None and record.result and record.result["backup_id"] == job.manifest.backup_id
        (disk,) = record.disks
        assert disk.done and disk.scanned == disk.total == 10 * 65536 and disk.stored == 5 * 65536
        assert disk.zero == 5 * 65536 and disk.read == 5 * 65536
    assert sorted(m.vm.id for m in repo.manifests()) == ["db01", "mail01", "web01"]


def test_prune_and_gc_commands(cli: Run, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert cli("repo", "init", str(repo), "--encryption", "none", "--chunk-size", "65536").code == 0
    image = write_image(tmp_path / "vda.img", 4 * 65536, [(0, random_bytes(4 * 65536, 1))])
    job = {"vmId": "web01", "backupPath": str(repo), "keepLast": 2, "pruneAfterBackup": True}
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job | {"providerOptions": {"vms": {"web01": {"vda": str(image)}}}}))
    ids = []
    for seed in range(3):
        with open(image, "r+b") as f:
            f.write(random_bytes(65536, 10 + seed))
        result = cli("backup", "--config", str(job_file), "--json")
        assert result.code == 0, result.stderr
        ids.append(json.loads(result.stdout)["backup_id"])
    assert json.loads(result.stdout)["prune"]["removed_backups"] == [ids[0]]  # pruneAfterBackup, keepLast 2
    assert json.loads(result.stdout)["prune"]["kept_by_grace"] == 2  # the old index and chunk wait 24 h

    dry = cli("prune", "--repo", str(repo), "--keep-last", "1", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    assert json.loads(dry.stdout)["removed_backups"] == [ids[1]]
    assert (repo / "manifests" / ids[1]).exists()
    done = json.loads(
        cli("prune", "--repo", str(repo), "--vm", "web01", "--keep-last", "1", "--grace", "0", "--json").stdout
    )
    assert done["removed_backups"] == [ids[1]] and done["deleted_objects"] == 4  # 2 indexes, 2 chunks
    assert sorted(p.name for p in (repo / "manifests").iterdir()) == [ids[2]]
    gc = cli("gc", "--repo", str(repo), "--grace", "0")
    assert gc.code == 0 and "0 backups removed; 0 unreferenced objects" in gc.stdout
    assert cli("verify", "--repo", str(repo), "--read-data").code == 0
    kinds = [j["kind"] for j in json.loads(cli("jobs", "list", "--json").stdout)]
    assert kinds == ["verify", "prune", "prune", "prune", "backup", "backup", "backup"]

    for args, message in [
        (["prune", "--repo", str(repo)], "give at least one of --keep-last"),
        (["prune", "--repo", str(repo), "--keep-last", "1", "--grace", "soon"], "--grace: 'soon' is not a duration"),
    ]:
        bad = cli(*args)
        assert bad.code == 3 and len(bad.err_lines) == 1 and message in bad.stderr


def test_a_job_registry_that_cannot_be_opened_is_one_line(cli: Run, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("--job-db", str(blocker / "jobs.sqlite"), "jobs", "list")
    assert result.code == 3 and len(result.err_lines) == 1
    assert result.err_lines[0].startswith(
        f"genievm: error: invalid configuration: jobDb: cannot open job registry {blocker}"
    )


def test_a_failed_prune_after_backup_leaves_the_backup_succeeded(
    host: PluginHost, new_repo: Any, tmp_path: Path
) -> None:
    repo, path = new_repo()
    image = write_image(tmp_path / "vda.img", 4 * 65536, [(0, random_bytes(4 * 65536, 1))])
    options = {"vms": {"web01": {"vda": str(image)}}}
    config = BackupConfig(vm_id="web01", backup_path=repo.url, provider_options=options, keep_last=1)
    with JobManager(JobRegistry(tmp_path / "jobs.sqlite")) as manager:
        manager.run(BackupJob(host, config, repo))
        (path / "manifests" / "20260101T000000.000000Z-00000000").write_bytes(b"damaged")
        job = manager.run(BackupJob(host, config.model_copy(update={"prune_after_backup": True}), repo))
    assert job.state is JobState.SUCCEEDED and job.result is not None
    assert "cannot collect garbage: manifest 20260101T000000.000000Z-00000000" in job.result["prune_error"]
    assert len(repo.backup_ids()) == 3  # nothing was pruned
