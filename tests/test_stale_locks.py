"""Stale locks (issue 21): the heartbeat, staleness by age for other hosts and by pid for this one, `repo unlock`.

The holders are real processes: a Python process holding a lock through the library (its heartbeat thread
refreshing it), a process that merely lives (its pid in a planted lock), and `genievm` processes contending.
Locks of another host are planted objects, as that host would have written them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import CHUNK, genievm_path, write_image

from genievm_core.errors import LockLostError
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.lock import LockPolicy, remove_locks, repository_lock
from genievm_core.repository.storage import open_storage
from genievm_core.testing import mounted_tmpfs
from genievm_core.testing.cli import error_lines

MONTHS_AGO = (datetime.now(UTC) - timedelta(days=90)).isoformat()


def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_")}
    return clean | {"GENIEVM_JOB_DB": str(tmp_path / "jobs.sqlite")}


def genievm(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [genievm_path(), *args], env=env(tmp_path), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def new_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    genievm(tmp_path, "repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)).check_returncode()
    return repo


def plant(repo: Path, host: str, pid: int, created_at: str, refreshed_at: str | None = None) -> Path:
    """A lock object as another process wrote it; without ``refreshed_at``, in the format before the heartbeat."""
    holder = {"kind": "exclusive", "operation": "prune", "host": host, "pid": pid, "created_at": created_at}
    if refreshed_at is not None:
        holder["refreshed_at"] = refreshed_at
    path = repo / "locks" / uuid.uuid4().hex
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(holder))
    return path


def locks(repo: Path) -> list[dict[str, object]]:
    folder = repo / "locks"  # the file storage removes a folder left empty
    held = sorted(p for p in folder.iterdir() if not p.name.endswith(".removed")) if folder.exists() else []
    return [json.loads(p.read_text()) for p in held]


def tombstones(repo: Path) -> list[str]:
    """What removers of locks whose holders may still run left beside them (``removed_at <time> by <what>``)."""
    return sorted(p.read_text() for p in (repo / "locks").glob("*.removed"))


def test_a_months_old_lock_of_another_host_no_longer_blocks_a_backup(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    left = plant(repo, "otherhost", 4242, MONTHS_AGO)  # the old format: no heartbeat field
    image = write_image(tmp_path / "vda.img", 2 * CHUNK, [(0, b"data")])
    run = genievm(tmp_path, "backup", "--vm", "web01", "--repo", str(repo), "--disk", f"vda={image}", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["vm"]["id"] == "web01"
    assert not left.exists()
    assert "lock.stale_removed" in run.stderr and "otherhost" in run.stderr  # said, not done silently
    assert locks(repo) == []
    (tombstone,) = tombstones(repo)  # that host's process may still run: it learns its lock was taken over
    assert tombstone.startswith("removed_at ") and tombstone.endswith(" by a lock taken over it (stale)\n")


def test_a_lock_of_another_host_with_a_fresh_heartbeat_is_never_broken(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    now = datetime.now(UTC).isoformat()
    lock = plant(repo, "otherhost", 4242, MONTHS_AGO, refreshed_at=now)  # running for months, alive
    gc = genievm(tmp_path, "gc", "--repo", str(repo), "--lock-wait", "0")
    assert gc.returncode == 19, gc.stderr
    assert error_lines(gc.stderr) == [
        f"genievm: error: repository file://{repo} is locked by prune (pid 4242 on otherhost since {MONTHS_AGO}, "
        f"refreshed {now}); if that process is gone, run `genievm repo unlock`"
    ]
    unlock = genievm(tmp_path, "repo", "unlock", "--repo", str(repo))
    assert unlock.returncode == 0, unlock.stderr
    assert unlock.stdout.splitlines()[-1] == "0 locks removed, 1 lock kept"
    assert lock.exists()

    forced = genievm(tmp_path, "repo", "unlock", "--repo", str(repo), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert "genievm: warning: --force removes every lock, also those of running jobs" in forced.stderr
    assert [h["host"] for h in json.loads(forced.stdout)["removed"]] == ["otherhost"]
    assert not lock.exists()


def test_unlock_removes_what_is_stale_and_keeps_a_live_process_of_this_host(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        mine = plant(repo, socket.gethostname(), live.pid, MONTHS_AGO)  # old, but its process runs: never broken
        old = plant(repo, "otherhost", 4242, MONTHS_AGO, refreshed_at=MONTHS_AGO)
        unlock = genievm(tmp_path, "repo", "unlock", str(repo))
        assert unlock.returncode == 0, unlock.stderr
        assert unlock.stdout.splitlines() == [
            f"removed lock locks/{old.name}: prune (pid 4242 on otherhost since {MONTHS_AGO})",
            f"kept lock locks/{mine.name} (not stale): prune (pid {live.pid} on {socket.gethostname()} "
            f"since {MONTHS_AGO})",
            "1 lock removed, 1 lock kept",
        ]
        gc = genievm(tmp_path, "gc", "--repo", str(repo), "--lock-wait", "0")
        assert gc.returncode == 19 and f"pid {live.pid} on {socket.gethostname()}" in gc.stderr, gc.stderr
        assert mine.exists()
    finally:
        live.kill()
        live.wait()
    unlock = genievm(tmp_path, "repo", "unlock", str(repo), "--json")  # its process gone: now it is stale
    assert [h["pid"] for h in json.loads(unlock.stdout)["removed"]] == [live.pid]
    assert locks(repo) == []


HOLDER = """
import sys, time
from genievm_core.plugin import PluginHost
from genievm_core.repository.lock import LockPolicy, remove_locks, repository_lock
from genievm_core.repository.storage import open_storage
storage = open_storage(PluginHost(), sys.argv[1], {})
with repository_lock(storage, "exclusive", "prune", policy=LockPolicy(stale_after=2.0)):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_running_holder_refreshes_its_lock_so_others_never_take_it_as_stale(tmp_path: Path) -> None:
    """The holder runs on "another host": its own UTS namespace with its own host name, so this host judges
    its lock by the heartbeat's age alone; killed (no clean-up), its lock goes stale and is broken."""
    repo = new_repo(tmp_path)
    if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a UTS namespace here (needs root)")
    script = f'hostname lockholder.example && exec "{sys.executable}" -c "$0" "$1"'
    holder = subprocess.Popen(["unshare", "--uts", "sh", "-c", script, HOLDER, str(repo)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env(tmp_path))  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        time.sleep(3)  # longer than stale_after: only the heartbeat keeps it
        (lock,) = locks(repo)
        assert lock["host"] == "lockholder.example"
        created = datetime.fromisoformat(str(lock["created_at"]))
        refreshed = datetime.fromisoformat(str(lock["refreshed_at"]))
        assert refreshed - created > timedelta(seconds=2)
        assert datetime.now(UTC) - refreshed < timedelta(seconds=1.5)
        gc = genievm(tmp_path, "--lock-stale-after", "2", "gc", "--repo", str(repo), "--lock-wait", "0")
        assert gc.returncode == 19, gc.stderr
        assert "is locked by prune (pid " in gc.stderr and " on lockholder.example since " in gc.stderr
    finally:
        holder.kill()  # no finally of its own runs: the lock stays, no longer refreshed
        holder.wait()
    assert len(locks(repo)) == 1
    time.sleep(2.5)
    gc = genievm(tmp_path, "--lock-stale-after", "2", "gc", "--repo", str(repo), "--lock-wait", "0")
    assert gc.returncode == 0, gc.stderr
    assert "lock.stale_removed" in gc.stderr and "lockholder.example" in gc.stderr
    assert locks(repo) == [] and len(tombstones(repo)) == 1


def test_the_holder_removes_its_lock_when_it_ends(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(repo)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env(tmp_path))  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    assert [lock["pid"] for lock in locks(repo)] == [holder.pid]
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=10) == 0
    assert locks(repo) == [], "the heartbeat stopped and the lock removed in finally"


def test_a_lock_that_cannot_be_refreshed_is_lost_and_stops_the_writer(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "fs", "size=4m") as fs:
        storage = open_storage(PluginHost(), str(fs / "repo"), {})
        repo = Repository.init(storage, passphrase=None, chunk_size=CHUNK)
        repo.locking = LockPolicy(stale_after=1.0, refresh_every=0.2)
        try:
            with repo.lock("shared", "backup of web01"):
                repo.put_chunk(repo.codec.chunk_id(b"a" * CHUNK), b"a" * CHUNK)
                subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
                time.sleep(1.5)
                with pytest.raises(LockLostError) as lost:
                    repo.put_chunk(repo.codec.chunk_id(b"b" * CHUNK), b"b" * CHUNK)
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)
    assert lost.value.exit_code == 29
    assert str(lost.value).startswith(
        f"repository file://{fs}/repo: lost this process's lock (backup of web01): it could not be refreshed for "
    )
    assert str(lost.value).endswith("; stopped before writing anything more")


def test_a_lock_removed_by_force_is_lost_by_its_holder(tmp_path: Path) -> None:
    repo_path = new_repo(tmp_path)
    storage = open_storage(PluginHost(), str(repo_path), {})
    with repository_lock(storage, "shared", "restore of web01", policy=LockPolicy(refresh_every=0.1)) as held:
        forced = genievm(tmp_path, "repo", "unlock", str(repo_path), "--force")
        assert forced.returncode == 0 and forced.stdout.splitlines()[-1] == "1 lock removed, 0 locks kept"
        wait_until_lost(held)
        with pytest.raises(LockLostError, match=r"its lock object was removed by another process"):
            held.check()
    assert list(storage.list("locks/")) == [], "the lock and its tombstone are gone"


class RemovedDuringRefresh:
    """The real storage, where `repo unlock --force` runs between the heartbeat's look at its lock and its put."""

    def __init__(self, storage: Any) -> None:
        self.storage, self.removed = storage, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def exists(self, key: str) -> bool:
        there = self.storage.exists(key)
        if there and not self.removed and threading.current_thread().name.startswith("genievm-lock-"):
            self.removed = len(remove_locks(self.storage, force=True)[0])
        return there


def test_a_lock_removed_while_its_heartbeat_refreshes_it_is_still_lost(tmp_path: Path) -> None:
    repo_path = new_repo(tmp_path)
    storage = RemovedDuringRefresh(open_storage(PluginHost(), str(repo_path), {}))
    with repository_lock(storage, "shared", "backup of web01", policy=LockPolicy(refresh_every=0.05)) as held:
        wait_until_lost(held)
        assert storage.removed == 1
        with pytest.raises(LockLostError, match=r"its lock object was removed by another process"):
            held.check()
        assert len(list(storage.list("locks/"))) == 2, "the refresh put the lock back beside its tombstone"
    assert list(storage.list("locks/")) == [], "the lock and its tombstone are gone"


def test_tombstones_of_removed_locks_go_once_their_holders_had_time_to_see_them(tmp_path: Path) -> None:
    repo_path = new_repo(tmp_path)
    (repo_path / "locks").mkdir(exist_ok=True)
    old, fresh = (repo_path / "locks" / f"{uuid.uuid4().hex}.removed" for _ in range(2))
    old.write_text(f"removed_at {MONTHS_AGO} by genievm repo unlock --force\n")
    fresh.write_text(f"removed_at {datetime.now(UTC).isoformat()} by genievm repo unlock --force\n")
    listed = genievm(tmp_path, "repo", "unlock", str(repo_path))
    assert listed.returncode == 0 and listed.stdout.splitlines()[-1] == "0 locks removed, 0 locks kept", listed.stdout
    assert sorted((repo_path / "locks").iterdir()) == [fresh]


def wait_until_lost(held: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while held.lost is None and time.monotonic() < deadline:
        time.sleep(0.02)


def test_backup_and_restore_take_lock_wait(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    image = write_image(tmp_path / "vda.img", 2 * CHUNK, [(0, b"data")])
    backup = ["backup", "--vm", "web01", "--repo", str(repo), "--disk", f"vda={image}"]
    genievm(tmp_path, *backup).check_returncode()
    plant(repo, "otherhost", 4242, MONTHS_AGO, refreshed_at=datetime.now(UTC).isoformat())  # a prune, running
    restore = ["restore", "--vm", "web01", "--repo", str(repo), "--target", str(tmp_path / "out")]
    for args, wait in ((backup, "0"), (backup, "1.5"), (restore, "0")):
        started = time.monotonic()
        run = genievm(tmp_path, *args, "--lock-wait", wait)
        took = time.monotonic() - started
        assert run.returncode == 19, run.stderr
        assert float(wait) <= took < float(wait) + 5, (args[0], wait, took)  # not the default 10 s


def test_a_lock_declaring_a_longer_stale_time_is_judged_by_it(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    ten_minutes_ago = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    lock = plant(repo, "otherhost", 4242, MONTHS_AGO, refreshed_at=ten_minutes_ago)
    lock.write_text(json.dumps(json.loads(lock.read_text()) | {"stale_after": 3600}))  # it refreshes every 10 min
    kept = genievm(tmp_path, "--lock-stale-after", "60", "repo", "unlock", str(repo), "--json")
    assert kept.returncode == 0 and json.loads(kept.stdout)["removed"] == [], kept.stderr
    lock.write_text(json.dumps(json.loads(lock.read_text()) | {"stale_after": 300}))
    removed = genievm(tmp_path, "--lock-stale-after", "60", "repo", "unlock", str(repo), "--json")
    assert [h["host"] for h in json.loads(removed.stdout)["removed"]] == ["otherhost"]
