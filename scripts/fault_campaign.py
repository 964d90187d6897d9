"""A fault-injection campaign: SIGKILL backups, prunes and garbage collections at random moments.

usage: .venv/bin/python scripts/fault_campaign.py [--kills 200] [--seed 1] [--kinds backup,prune,gc]
                                                  [--provider image|kvm|vmware] [--workdir DIR] [--keep]

Each kill prepares work for its job (changed disks, backups to prune, garbage
to collect), runs the job as a real ``genievm`` process, SIGKILLs it after a
delay drawn (from the seed) over the job's measured duration, then checks:
every committed backup passes ``verify --read-data`` (so no manifest names a
missing chunk); the next run of the same job completes (a backup then holds
exactly the disks' chunks); afterwards no lock, temporary file or unfinished
job is left. With ``--provider kvm`` the VM is a real libvirt domain backed
up live, and the checks add: no libvirt backup job, only the repository's
newest checkpoint, no NBD socket in the run folder. With ``--provider vmware``
(``--kinds backup``) the VM is on a private vcsim, backed up over https, and
after the next run it must have no GenieVM snapshot (a killed run's is swept).

It prints one line per kill, then the kills tried, how many hit the job before
it ended, the failures found and the time taken. The same seed replays the
same delays. Exit 0 when no kill found a problem, 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from genievm_core.logging import configure_logging
from genievm_core.testing.faults import KINDS, ImageFaultBed, KillResult


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: backup, prune, gc")
    parser.add_argument("--provider", choices=["image", "kvm", "vmware"], default="image")
    parser.add_argument("--workdir", type=Path, help="where the repository and images go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        parser.error(f"--kinds: choose from {', '.join(KINDS)}")
    if args.provider == "vmware" and set(kinds) != {"backup"}:
        parser.error("--provider vmware: --kinds backup only")
    configure_logging("error")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="genievm-faults-"))
    started = time.monotonic()
    bed: ImageFaultBed
    if args.provider == "kvm":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/genievm_kvm/tests"))
        from kvm_faults import KVMFaultBed  # the KVM plugin's test helpers: a scratch VM on qemu:///system

        bed = KVMFaultBed(workdir, seed=args.seed)
    elif args.provider == "vmware":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/genievm_vmware/tests"))
        from vmware_faults import VMwareFaultBed  # the VMware plugin's test helpers: a scratch VM on a private vcsim

        bed = VMwareFaultBed(workdir, seed=args.seed)
    else:
        bed = ImageFaultBed(workdir, seed=args.seed)
    results: list[KillResult] = []
    try:
        bed.setup()
        for kind in kinds:
            print(f"{kind}: {bed.measure(kind):.2f} s when not killed", flush=True)
        for number in range(args.kills):
            kind = kinds[number % len(kinds)]
            result = bed.kill_once(number, kind)
            results.append(result)
            print(result.line(), flush=True)
    finally:
        bed.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    failures = [r for r in results if r.problems]
    hit = sum(r.killed for r in results)
    print(
        f"provider {args.provider}, seed {args.seed}, kinds {','.join(kinds)}: "
        f"kills tried {len(results)} ({hit} before the job ended), failures found {len(failures)}, "
        f"time taken {elapsed:.0f} s"
    )
    for r in failures:
        print(f"FAILED {r.line()}")
        for problem in r.problems:
            print(f"    {problem}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
