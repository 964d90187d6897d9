"""Bandwidth limits, measured: a job limited to R MB/s moves its bytes in bytes / R seconds, within 10 %.

Each check sets a limit far below what this machine does unlimited (a few MB/s,
where a backup runs at hundreds), moves a few seconds' worth of bytes through
the real jobs and compares the time the transfer took with the time the limit
allows: too fast means the limit leaks (one bucket per thread or per disk
would finish in a fraction of it), too slow means the limiter sleeps too much.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from jobs_support import env_with, init_repo, wait_for_job
from support import CHUNK, CLIResult, genievm_path, random_bytes, write_image

from genievm_core.api import GenieVM
from genievm_core.engine import Bandwidth, DiskProgress, JobControl
from genievm_core.engine.limits import MB
from genievm_core.jobs import JobRegistry, run_backup, run_restore
from genievm_core.jobs.registry import SCHEMA_VERSION
from genievm_core.models.config import BackupConfig, RestoreConfig
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository

TOLERANCE = 0.10
RATE = 6.0  # MB/s: far below this machine's unlimited speed, even when it is busy


def assert_rate(moved: int, seconds: float, mbps: float) -> None:
    expected = moved / (mbps * MB)
    assert abs(seconds - expected) <= TOLERANCE * expected, (
        f"{moved} bytes took {seconds:.2f} s at a limit of {mbps} MB/s: expected {expected:.2f} s ± 10 %"
    )


class Phases:
    """When each phase of a job began (the job's ``on_phase``)."""

    def __init__(self) -> None:
        self.began: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        self.began[name] = time.monotonic()

    def transfer_seconds(self) -> float:
        after = self.began.get("verify", self.began["commit"])
        return after - self.began["transfer"]


def _images(tmp_path: Path, sizes: dict[str, int]) -> dict[str, Path]:
    return {
        name: write_image(tmp_path / f"{name}.img", size, [(0, random_bytes(size, seed))])
        for seed, (name, size) in enumerate(sizes.items())
    }


def _backup_config(repo: Repository, disks: dict[str, Path], **fields: Any) -> BackupConfig:
    return BackupConfig(
        vm_id="vm1",
        backup_path=repo.url,
        provider_options={"vms": {"vm1": {name: str(path) for name, path in disks.items()}}},
        **fields,
    )


# the bucket itself


def test_one_bucket_shared_by_several_threads_holds_the_rate() -> None:
    bucket = Bandwidth(4.0)
    takes, size = 25, 80_000  # 4 threads × 25 × 80 kB = 8 MB: 2 s at 4 MB/s

    def move() -> None:
        for _ in range(takes):
            bucket.take(size)

    threads = [threading.Thread(target=move) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_rate(4 * takes * size, time.monotonic() - started, 4.0)


def test_a_changed_rate_reaches_a_thread_already_waiting() -> None:
    bucket = Bandwidth(0.001)  # 1 kB/s: the take below would wait 1,000 s
    done = threading.Event()
    thread = threading.Thread(target=lambda: (bucket.take(1_000_000), done.set()))
    thread.start()
    time.sleep(0.2)
    assert not done.is_set()
    bucket.set(0)  # no limit
    assert done.wait(5), "lifting the limit did not wake the waiting thread"
    thread.join()


def test_cancelling_a_job_wakes_its_threads_asleep_in_a_limit() -> None:
    control = JobControl()
    control.limits.change(read=0.001)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (control.limits.read.take(1_000_000), done.set()))
    thread.start()
    time.sleep(0.2)
    control.cancel()
    assert done.wait(5), "cancel left a thread asleep in the read limit"
    thread.join()


# backup and restore, measured


def test_a_backup_read_limit_is_one_bucket_for_all_disks_and_workers(
    tmp_path: Path, host: PluginHost, new_repo: Any
) -> None:
    repo, _ = new_repo(chunk_size=CHUNK)
    disks = _images(tmp_path, {"vda": 12 * MB, "vdb": 12 * MB})  # 24 MB: 4 s at 6 MB/s, 2 s per disk
    config = _backup_config(repo, disks, bandwidth_limit_read=RATE, max_concurrent_disks=2)
    phases = Phases()
    manifest = run_backup(host, config, repo, workers=4, on_phase=phases)
    assert manifest.stats.bytes_read == 24 * MB
    assert_rate(manifest.stats.bytes_read, phases.transfer_seconds(), RATE)


def test_a_backup_write_limit_holds_what_goes_to_the_storage(tmp_path: Path, host: PluginHost, new_repo: Any) -> None:
    repo, _ = new_repo(chunk_size=CHUNK)
    disks = _images(tmp_path, {"vda": 24 * MB})
    config = _backup_config(repo, disks, bandwidth_limit_write=RATE)
    phases = Phases()
    manifest = run_backup(host, config, repo, workers=4, on_phase=phases)
    assert manifest.stats.bytes_stored >= 24 * MB  # random data: stored as it is, with a header per chunk
    assert_rate(manifest.stats.bytes_stored, phases.transfer_seconds(), RATE)


@pytest.mark.parametrize("direction", ["read", "write"])
def test_a_restore_limit_holds(direction: str, tmp_path: Path, host: PluginHost, new_repo: Any) -> None:
    repo, _ = new_repo(chunk_size=CHUNK)
    disks = _images(tmp_path, {"vda": 12 * MB, "vdb": 12 * MB})
    run_backup(host, _backup_config(repo, disks), repo, workers=4)
    config = RestoreConfig(
        vm_id="vm1",
        backup_path=repo.url,
        restore_path=tmp_path / "restored",
        verify_after_restore=False,
        **{f"bandwidth_limit_{direction}": RATE},
    )
    phases = Phases()
    run_restore(host, config, repo, workers=4, on_phase=phases)
    assert (tmp_path / "restored" / "vda.img").read_bytes() == disks["vda"].read_bytes()
    assert_rate(24 * MB, phases.transfer_seconds(), RATE)


# changed while the job runs


def test_a_limit_asked_for_through_the_registry_applies_to_the_running_job(tmp_path: Path) -> None:
    with GenieVM(job_db=tmp_path / "jobs.sqlite") as genievm:
        repo = genievm.init_repository(str(tmp_path / "repo"), passphrase=None, chunk_size=CHUNK)
        disks = _images(tmp_path, {"vda": 24 * MB})
        read: list[int] = []

        def seen(progress: DiskProgress) -> None:
            read.append(progress.read)

        job = genievm.backup_job(_backup_config(repo, disks, bandwidth_limit_read=1.0), repo)  # 24 s as it is
        running = genievm.start(job, progress=seen)
        while not read or read[-1] < MB // 2:
            assert not job.finished, job.error
            time.sleep(0.02)
        record = genievm.limit(job.id, read=RATE)  # as `genievm jobs limit` does: another process may ask
        assert record.limits == {"read": 1.0, "write": None}  # asked for, not applied yet
        while job.control.limits.read.mbps != RATE:  # the job's monitor applies it within a poll
            time.sleep(0.005)
        changed, done_then = time.monotonic(), read[-1]
        running.wait(60)
        assert job.state.value == "succeeded", job.error
        assert_rate(24 * MB - done_then, time.monotonic() - changed, RATE)
        assert genievm.job(job.id).limits == {"read": RATE, "write": None}


def test_genievm_jobs_limit_changes_the_limits_of_a_backup_in_another_process(
    tmp_path: Path, cli: Any
) -> None:
    env = env_with(tmp_path / "jobs.sqlite")
    init_repo(tmp_path / "repo", env, chunk_size=CHUNK)
    image = write_image(tmp_path / "vda.img", 16 * MB, [(0, random_bytes(16 * MB, 3))])
    backup = [genievm_path(), "backup", "--vm", "v", "--repo", str(tmp_path / "repo"), "--disk", f"vda={image}"]
    proc = subprocess.Popen(
        [*backup, "--limit-read", "0.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )  # 32 s as it is
    try:
        registry = JobRegistry(tmp_path / "jobs.sqlite")
        record = wait_for_job(registry, lambda r: r.state.value == "running" and bool(r.disks), proc)
        shown: CLIResult = cli("jobs", "show", record.id)
        assert "  limits: read 0.5 MB/s, write no limit" in shown.stdout.splitlines()
        lifted: CLIResult = cli("jobs", "limit", record.id, "--read", "0", "--write", "50")
        assert (lifted.code, lifted.stdout.strip()) == (0, f"job {record.id}: read no limit, write 50 MB/s")
        _, err = proc.communicate(timeout=20)  # unlimited reads: done in a fraction of the 32 s
        assert proc.returncode == 0, err
        registry.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_jobs_limit_needs_a_limit_and_a_job_that_has_not_ended(tmp_path: Path, cli: Any) -> None:
    with GenieVM() as genievm:
        repo = genievm.init_repository(str(tmp_path / "repo"), passphrase=None, chunk_size=CHUNK)
        disks = _images(tmp_path, {"vda": CHUNK})
        job = genievm.run(genievm.backup_job(_backup_config(repo, disks), repo))
    nothing: CLIResult = cli("jobs", "limit", job.id)
    assert (nothing.code, nothing.err_lines) == (
        3,
        ["genievm: error: invalid configuration: jobs limit: give --read MBPS, --write MBPS or both"],
    )
    ended: CLIResult = cli("jobs", "limit", job.id, "--read", "5")
    assert (ended.code, ended.err_lines) == (
        27,
        [f"genievm: error: job {job.id} is succeeded; its limits cannot be changed"],
    )


def test_the_limits_come_from_the_config_file_and_the_environment(tmp_path: Path) -> None:
    from genievm_core.models.config import load_config

    file = tmp_path / "job.json"
    file.write_text('{"vmId": "vm1", "backupPath": "/srv/b", "bandwidthLimitRead": 20}')
    config = load_config(BackupConfig, path=file, environ={"GENIEVM_BANDWIDTH_LIMIT_WRITE": "7.5"})
    assert (config.bandwidth_limit_read, config.bandwidth_limit_write) == (20.0, 7.5)


def test_a_registry_of_schema_2_gains_the_limits(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    JobRegistry(db).close()
    with sqlite3.connect(db) as conn:  # as GenieVM 0.2 left it
        conn.execute("ALTER TABLE jobs DROP COLUMN limits")
        conn.execute("ALTER TABLE jobs DROP COLUMN limits_requested")
        conn.execute("PRAGMA user_version = 2")
    with GenieVM(job_db=db) as genievm:
        repo = genievm.init_repository(str(tmp_path / "repo"), passphrase=None, chunk_size=CHUNK)
        disks = _images(tmp_path, {"vda": CHUNK})
        job = genievm.run(genievm.backup_job(_backup_config(repo, disks, bandwidth_limit_write=40), repo))
        assert genievm.job(job.id).limits == {"read": None, "write": 40.0}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
