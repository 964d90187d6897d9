"""Random SIGKILLs of real ``genievm backup``, ``prune`` and ``gc`` processes leave a sound repository.

Each kill comes at a seeded random moment over the job's measured duration
(``genievm_core.testing.faults``); after it, every committed backup passes
``verify --read-data``, the next run of the same job completes (a backup then
holds exactly the disks' chunks), and no lock, temporary file or unfinished
job is left. ``scripts/fault_campaign.py`` runs the same kills by the hundred.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from support import CHUNK, genievm_path, random_bytes, write_image

from genievm_core.testing.faults import ImageFaultBed

KILLS_PER_KIND = 7  # 21 kills in all


@pytest.mark.parametrize("kind", ["backup", "prune", "gc"])
def test_random_kills_leave_a_sound_repository(kind: str, tmp_path: Path) -> None:
    bed = ImageFaultBed(tmp_path, seed={"backup": 11, "prune": 12, "gc": 13}[kind], disk_mib=8)
    bed.setup()
    bed.measure(kind)
    results = [bed.kill_once(n, kind) for n in range(KILLS_PER_KIND)]
    assert [r.line() for r in results if r.problems] == []
    assert any(r.killed for r in results), [r.line() for r in results]  # (about 2 in 3 land before the end)


def test_gc_removes_temporary_files_of_puts_a_killed_process_left(tmp_path: Path) -> None:
    """Regression: a put killed between writing its temporary file and renaming it left the file for ever."""
    repo = tmp_path / "repo"
    env = {"GENIEVM_JOB_DB": str(tmp_path / "jobs.sqlite")}
    exe = genievm_path()
    subprocess.run([exe, "repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)], check=True)
    image = write_image(tmp_path / "vda.img", 4 * CHUNK, [(0, random_bytes(4 * CHUNK, 1))])
    subprocess.run([exe, "backup", "--vm", "v", "--repo", str(repo), "--disk", f"vda={image}"], check=True, env=env)
    chunk = next(p for p in (repo / "chunks").rglob("*") if p.is_file())
    debris = [
        chunk.with_name(f".{chunk.name}.0123456789ab.tmp"),
        repo / "manifests" / ".20261128T000000.000000Z-00000000.0123456789ab.tmp",
        repo / "indexes" / ".x.0123456789ab.tmp",
    ]
    for path in debris:
        path.write_bytes(b"half a put")
    locks = repo / "locks"
    locks.mkdir(exist_ok=True)
    in_flight_lock, killed_lock = locks / ".abc.0123456789ab.tmp", locks / ".def.0123456789ab.tmp"
    in_flight_lock.write_bytes(b"{")
    killed_lock.write_bytes(b"{")
    two_minutes_ago = time.time() - 120
    os.utime(killed_lock, (two_minutes_ago, two_minutes_ago))  # a lock's put killed midway, found by the campaign

    gc = subprocess.run([exe, "gc", "--repo", str(repo), "--json"], capture_output=True, text=True, env=env)
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout)["leftovers_removed"] == 4
    assert not any(p.exists() for p in [*debris, killed_lock])
    assert in_flight_lock.exists(), "a lock being taken right now is not garbage collection's"
    verify = subprocess.run([exe, "verify", "--repo", str(repo), "--read-data"], capture_output=True, env=env)
    assert verify.returncode == 0
