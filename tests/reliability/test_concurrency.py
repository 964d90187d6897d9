"""Processes sharing one repository: backups of different VMs, prune and GC at once; a full disk; a killed lock holder.

All of it with real ``genievm`` processes on a filesystem repository.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from support import CHUNK, genievm_path, open_repo, patch_image, random_bytes, write_image

from genievm_core.jobs import run_verify
from genievm_core.plugin import PluginHost
from genievm_core.testing import mounted_tmpfs
from genievm_core.testing.cli import error_lines
from genievm_core.testing.faults import registry_problems, repository_problems, temporary_files

MIB = 1 << 20


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [genievm_path(), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, object]:
    out, err = proc.communicate(timeout=timeout)  # a deadlock fails here
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}: {err}"
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def test_two_backups_a_prune_and_a_gc_at_once_lose_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_")}
    env |= {"GENIEVM_JOB_DB": str(tmp_path / "jobs.sqlite")}
    repo = tmp_path / "repo"
    subprocess.run([genievm_path(), "repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)],
                   env=env, check=True)  # fmt: skip
    layouts = {vm: [(0, random_bytes(6 * MIB, n)), (10 * MIB, random_bytes(MIB, n + 9))] for n, vm in enumerate("ab")}
    images = {f"vm-{vm}": write_image(tmp_path / f"vm-{vm}.img", 16 * MIB, layout) for vm, layout in layouts.items()}
    for vm, image in images.items():  # a first backup each: prune has something to remove from the second round on
        finish(start(env, "backup", "--vm", vm, "--repo", str(repo), "--disk", f"vda={image}", "--json"))

    for round_ in range(3):
        for seed, image in enumerate(images.values()):
            patch_image(image, [(round_ * MIB + seed * 4096, random_bytes(MIB, 100 * round_ + seed))])
        procs = [start(env, "backup", "--vm", vm, "--repo", str(repo), "--disk", f"vda={image}", "--json")
                 for vm, image in images.items()]  # fmt: skip
        procs.append(start(env, "prune", "--repo", str(repo), "--keep-last", "1", "--grace", "0", "--json"))
        procs.append(start(env, "gc", "--repo", str(repo), "--grace", "0", "--json"))
        results = [finish(p) for p in procs]
        assert results[0]["vm"]["id"] == "vm-a" and results[1]["vm"]["id"] == "vm-b"  # type: ignore[index]

        host = PluginHost()
        opened = open_repo(host, repo)
        assert repository_problems(host, str(repo), None, settled=True) == []
        for vm, image in images.items():  # the newest backup of each VM holds its disk as it is now
            latest = opened.latest(vm)
            assert latest is not None
            index = opened.disk_index(latest.disks[0])
            data = image.read_bytes()
            for i in range(index.count):
                block = data[i * CHUNK : (i + 1) * CHUNK]
                assert index[i] == (bytes(32) if not any(block) else opened.codec.chunk_id(block)), (vm, round_, i)
        assert all(r.ok for r in run_verify(host, opened, opened.manifests(), read_data=True))
    assert registry_problems(tmp_path / "jobs.sqlite") == []


def test_a_lock_left_by_a_killed_backup_is_broken_and_the_next_runs_go_through(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_")}
    env |= {"GENIEVM_JOB_DB": str(tmp_path / "jobs.sqlite")}
    repo = tmp_path / "repo"
    subprocess.run([genievm_path(), "repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(MIB)],
                   env=env, check=True)  # fmt: skip
    image = write_image(tmp_path / "vda.img", 48 * MIB, [(0, random_bytes(48 * MIB, 3))])
    backup = ["backup", "--vm", "v", "--repo", str(repo), "--disk", f"vda={image}", "--json"]
    slow = start(env, *backup, "--compression-level", "19")  # random data at level 19: slow enough to kill midway
    deadline = time.monotonic() + 60
    while not any((repo / "chunks").rglob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    locks = [p for p in (repo / "locks").iterdir() if not p.name.endswith(".tmp")]
    assert slow.poll() is None and len(locks) == 1, "the backup should hold its lock now"
    holder = json.loads(locks[0].read_text())
    assert holder["pid"] == slow.pid and holder["kind"] == "shared"
    slow.send_signal(signal.SIGKILL)
    slow.communicate()
    assert locks[0].exists(), "SIGKILL leaves the lock behind"

    # the exclusive lock of gc: the dead holder is noticed and its lock removed, without waiting
    started = time.monotonic()
    gc = finish(start(env, "gc", "--repo", str(repo), "--lock-wait", "0", "--json"))
    assert time.monotonic() - started < 30 and gc["removed_backups"] == []
    assert not locks[0].exists()
    finish(start(env, *backup))
    host = PluginHost()
    assert repository_problems(host, str(repo), None, settled=True) == []
    assert registry_problems(tmp_path / "jobs.sqlite") == []


def test_a_full_disk_fails_in_one_line_then_the_next_backup_reuses_what_was_stored(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_")}
    env |= {"GENIEVM_JOB_DB": str(tmp_path / "jobs.sqlite")}
    small = write_image(tmp_path / "small.img", 8 * CHUNK, [(0, random_bytes(2 * CHUNK, 1))])
    big = write_image(tmp_path / "big.img", 80 * CHUNK, [(0, random_bytes(80 * CHUNK, 2))])  # 5 MiB of random data
    with mounted_tmpfs(tmp_path / "fs", "size=3m") as folder:
        repo = folder / "repo"
        subprocess.run([genievm_path(), "repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)],
                       env=env, check=True)  # fmt: skip
        finish(start(env, "backup", "--vm", "small", "--repo", str(repo), "--disk", f"vda={small}", "--json"))

        failed = start(env, "backup", "--vm", "big", "--repo", str(repo), "--disk", f"vda={big}", "--workers", "2")
        out, err = failed.communicate(timeout=120)
        assert failed.returncode == 10, err
        (line,) = error_lines(err)
        assert line.startswith(f"genievm: error: storage file://{repo}: no space left on device while writing ")
        host = PluginHost()
        assert repository_problems(host, str(repo), None, settled=True) == []
        stored_before = sum(1 for p in (repo / "chunks").rglob("*") if p.is_file())
        assert stored_before > 2, "the failed backup stored some chunks before the disk was full"

        subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)  # space is freed
        again = finish(start(env, "backup", "--vm", "big", "--repo", str(repo), "--disk", f"vda={big}", "--json"))
        stats = again["stats"]
        assert isinstance(stats, dict)
        assert stats["chunks_deduplicated"] == stored_before - 2, "what the failed run stored is re-used"
        assert stats["chunks_new"] == 80 - stats["chunks_deduplicated"]
        assert repository_problems(host, str(repo), None, settled=True) == []
        assert temporary_files(repo) == []
