"""Repository locks (objects under locks/): shared locks coexist, exclusive ones exclude, dead holders are broken."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import CHUNK, RepoFactory, backup_vm, write_image

from genievm_core.engine import JobControl
from genievm_core.errors import JobCancelledError, RepositoryLockedError
from genievm_core.jobs import run_backup
from genievm_core.models.config import BackupConfig
from genievm_core.plugin import PluginHost
from genievm_core.repository.lock import LockPolicy, repository_lock


def holder(pid: int, host: str, kind: str = "exclusive", operation: str = "prune") -> bytes:
    return json.dumps(
        {"kind": kind, "operation": operation, "host": host, "pid": pid, "created_at": datetime.now(UTC).isoformat()}
    ).encode()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_shared_locks_coexist_and_are_released(new_repo: RepoFactory) -> None:
    repo, _ = new_repo()
    with repository_lock(repo.storage, "shared", "backup of a"), repository_lock(repo.storage, "shared", "restore"):
        assert len(list(repo.storage.list("locks/"))) == 2
    assert list(repo.storage.list("locks/")) == []


def test_an_exclusive_lock_excludes_and_names_its_holder(new_repo: RepoFactory) -> None:
    repo, _ = new_repo()
    with repository_lock(repo.storage, "exclusive", "prune"):
        with pytest.raises(RepositoryLockedError, match=r"locked by prune \(pid \d+ on "):
            with repository_lock(repo.storage, "shared", "backup", timeout=0.3):
                pass
        with pytest.raises(RepositoryLockedError):
            with repository_lock(repo.storage, "exclusive", "gc", timeout=0.3):
                pass
    with repository_lock(repo.storage, "shared", "backup", timeout=0.3):
        with pytest.raises(RepositoryLockedError, match="locked by backup"):
            with repository_lock(repo.storage, "exclusive", "prune", timeout=0.3):
                pass
    assert list(repo.storage.list("locks/")) == []


def test_a_lock_left_by_a_dead_process_is_broken(new_repo: RepoFactory) -> None:
    repo, _ = new_repo()
    repo.storage.put("locks/left-behind", holder(dead_pid(), socket.gethostname()))
    with repository_lock(repo.storage, "exclusive", "prune", timeout=0.3):
        assert not repo.storage.exists("locks/left-behind")


def test_a_lock_of_another_host_is_respected(new_repo: RepoFactory) -> None:
    repo, _ = new_repo()
    repo.storage.put("locks/remote", holder(dead_pid(), "some-other-host.example"))
    with pytest.raises(RepositoryLockedError, match="on some-other-host.example"):
        with repository_lock(repo.storage, "shared", "backup", timeout=0.3):
            pass
    assert repo.storage.exists("locks/remote")


def test_a_backup_holds_a_shared_lock_and_releases_it(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    repo, _ = new_repo()
    image = write_image(tmp_path / "vda.img", 2 * CHUNK, [(0, b"data")])
    seen: list[list[dict[str, object]]] = []

    def progress(_p: object) -> None:
        seen.append([json.loads(repo.storage.get(key)) for key in repo.storage.list("locks/")])

    cfg = BackupConfig(vm_id="vm", backup_path=repo.url, provider_options={"vms": {"vm": {"vda": str(image)}}})
    run_backup(host, cfg, repo, progress=progress, workers=1)
    assert seen, "the engine reports progress"
    for locks in seen:
        assert [(h["kind"], h["operation"], h["host"]) for h in locks] == [
            ("shared", "backup of vm", socket.gethostname())
        ]
    assert list(repo.storage.list("locks/")) == []


def test_a_cancelled_backup_commits_nothing(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    repo, _ = new_repo()
    image = write_image(tmp_path / "vda.img", 8 * CHUNK, [(0, b"x" * (8 * CHUNK))])
    backup_vm(host, repo, "vm", {"vda": write_image(tmp_path / "other.img", CHUNK, [(0, b"y")])})
    control = JobControl("job-7")
    cfg = BackupConfig(vm_id="vm", backup_path=repo.url, provider_options={"vms": {"vm": {"vda": str(image)}}})

    def cancel_at_first_progress(_p: object) -> None:
        control.cancel()

    with pytest.raises(JobCancelledError, match="job job-7 was cancelled"):
        run_backup(host, cfg, repo, progress=cancel_at_first_progress, control=control, workers=1)
    assert len(repo.backup_ids()) == 1, "the cancelled backup must not be visible"
    assert list(repo.storage.list("locks/")) == []


def test_a_backup_waiting_for_a_lock_stops_when_cancelled(
    host: PluginHost, new_repo: RepoFactory, tmp_path: Path
) -> None:
    """A cancel (genievm jobs cancel, a server that stops) ends the wait at once, not after --lock-wait."""
    repo, _ = new_repo()
    repo.locking = LockPolicy(wait=60)
    image = write_image(tmp_path / "vda.img", CHUNK, [(0, b"data")])
    cfg = BackupConfig(vm_id="vm", backup_path=repo.url, provider_options={"vms": {"vm": {"vda": str(image)}}})
    control = JobControl("job-8")
    threading.Timer(0.5, control.cancel).start()
    began = time.monotonic()
    with repository_lock(repo.storage, "exclusive", "prune"):
        with pytest.raises(JobCancelledError, match="job job-8 was cancelled"):
            run_backup(host, cfg, repo, control=control, workers=1)
    assert time.monotonic() - began < 10
    assert repo.backup_ids() == []
