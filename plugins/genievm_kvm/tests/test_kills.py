"""Live KVM backups SIGKILLed at random (seeded) moments: the repository stays sound and the hypervisor clean.

After each kill: every committed backup passes ``verify --read-data``; the
next backup completes and holds exactly the VM's disks; then libvirt has no
backup job, only the repository's newest checkpoint, no GenieVM snapshot, and
the run folder no NBD socket (``kvm_faults.KVMFaultBed``).
"""

from __future__ import annotations

from pathlib import Path

import libvirt
from kvm_faults import KVMFaultBed


def test_random_kills_of_live_backups(libvirt_conn: libvirt.virConnect, tmp_path: Path) -> None:
    bed = KVMFaultBed(tmp_path, seed=21)
    try:
        bed.setup()
        bed.measure("backup")
        results = []
        while sum(r.killed for r in results) < 2 and len(results) < 6:  # a kill may come after the job ended
            results.append(bed.kill_once(len(results), "backup"))
    finally:
        bed.close()
    assert [r.line() for r in results if r.problems] == []
    assert sum(r.killed for r in results) >= 2, [r.line() for r in results]
