"""VMware backups SIGKILLed at random (seeded) moments, against vcsim: the repository stays sound, the VM clean.

After each kill: every committed backup passes ``verify --read-data`` (so no
manifest names a missing chunk); the next backup of the same VM completes and
holds exactly the disks' data; then no lock, temporary file or unfinished job
is left, and the VM has no snapshot: one the kill left is swept by the next
run (``vmware_faults.VMwareFaultBed``). A second test kills a backup exactly
while its snapshot exists, so that the sweep is seen at work on every run.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from genievm_vmware.testing import Vcsim
from vmware_faults import VMwareFaultBed

from genievm_core.testing.faults import kill_after, registry_problems, repository_problems


def test_random_kills_of_vmware_backups(vcsim: Vcsim, tmp_path: Path) -> None:
    bed = VMwareFaultBed(tmp_path, seed=31, vcsim=vcsim)
    try:
        bed.setup()
        bed.measure("backup")
        results = [bed.kill_once(n, "backup") for n in range(3)]
    finally:
        bed.close()
    lines = [f"{r.line()} (snapshots it left: {bed.left_by_kills.get(r.number)})" for r in results]
    assert [line for r, line in zip(results, lines, strict=True) if r.problems] == []
    assert any(r.killed for r in results), lines


def test_a_backup_killed_while_its_snapshot_exists_leaves_it_and_the_next_run_sweeps_it(
    vcsim: Vcsim, tmp_path: Path
) -> None:
    bed = VMwareFaultBed(tmp_path, seed=32, vcsim=vcsim)
    try:
        bed.setup()
        bed.change_disks(bed.backed_up)
        proc = subprocess.Popen(bed.command("backup"), env=bed.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not (left := bed.snapshots()) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "the backup ended before its snapshot was seen"
        assert len(left) == 1 and bed.snapshots() == left, f"the kill left {bed.snapshots()}"

        assert repository_problems(bed.host, bed.url, bed.passphrase) == []
        again = kill_after(bed.command("backup"), bed.env, None)
        assert again.returncode == 0, again.stderr
        assert "vmware.stale_snapshot" in again.stderr and left[0] in again.stderr
        assert bed.leftovers() == []
        assert bed.backup_matches_disks(bed.backed_up) == []
        assert registry_problems(bed.db) == []
    finally:
        bed.close()
