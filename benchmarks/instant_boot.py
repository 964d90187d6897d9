"""Benchmark instant boot: the time from ``genievm instant start`` to a running VM, for sparse backups of any size.

For each size (default 4 and 64 GiB) a KVM VM (``genievm_kvm.testing``'s scratch VM, no OS) gets one
sparse qcow2 disk of that size holding 64 MiB of random data at its start and 1 MiB every GiB, is backed
up into an encrypted repository (4 MiB chunks), then deleted with its disk. Each run then times, with the
real ``genievm`` command in a fresh process:

- ``started``: ``genievm instant start`` returning, i.e. the export serving, the overlays made and the
  domain started;
- ``first read``: then the first read of the disk through the VM (a qemu-io read of 64 KiB at offset 0,
  on the guest's virtio disk: it misses the empty overlay and is served over NBD from the repository);

and ends with ``genievm instant abort``. Goal: at most 15 s to the first read, whatever the size.

    .venv/bin/python benchmarks/instant_boot.py [--sizes 4,64] [--runs 3] [--work DIR] [--json]

Needs root, libvirtd (scripts/services/libvirtd.sh) and nbdkit; docs/performance.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import libvirt
from genievm_kvm.testing import qemu_io, remove_vm, scratch_domain_xml

GOAL = 15.0  # seconds to the first read
GiB = 1 << 30
MiB = 1 << 20
PASSPHRASE = "instant boot benchmark"


@dataclass
class Result:
    size_gib: int
    backup_seconds: float
    started_seconds: list[float]
    first_read_seconds: list[float]


def genievm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("genievm")
    env = {**os.environ, "GENIEVM_PASSPHRASE": PASSPHRASE, "GENIEVM_JOB_DB": str(cwd / "state" / "jobs.sqlite")}
    done = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"genievm {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def backed_up(conn: libvirt.virConnect, folder: Path, size: int) -> str:
    """A VM with one sparse disk of ``size`` bytes, backed up into folder/repo and deleted; its name."""
    name = f"genievm-bench-{secrets.token_hex(3)}"
    disk = folder / f"{name}-vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(size)], check=True)
    random = folder / "random"
    random.write_bytes(os.urandom(64 * MiB))
    subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "qcow2", str(random), str(disk)], check=True)
    random.unlink()
    writes = [arg for offset in range(GiB, size, GiB) for arg in ("-c", f"write -P 0x5a {offset} {MiB}")]
    subprocess.run(["qemu-io", "-f", "qcow2", *writes, str(disk)], check=True, stdout=subprocess.DEVNULL)
    dom = conn.defineXML(scratch_domain_xml(name, {"vda": (disk, "qcow2")}))
    genievm("repo", "init", "repo", cwd=folder)
    genievm("backup", "--vm", name, "--repo", "repo", "--provider", "kvm", cwd=folder)
    remove_vm(dom)
    disk.unlink()
    return name


def one_run(conn: libvirt.virConnect, folder: Path, name: str, run: int) -> tuple[float, float]:
    """Seconds to the VM started and to its first read served over NBD."""
    new_name = f"{name}-instant-{run}"
    began = time.perf_counter()
    started = json.loads(genievm("instant", "start", "--repo", "repo", "--vm", name, "--new-name", new_name,
                                 "--json", cwd=folder).stdout)  # fmt: skip
    to_started = time.perf_counter() - began
    out = qemu_io(conn.lookupByName(new_name), 0, f"read 0 {64 << 10}")
    to_read = time.perf_counter() - began
    if out.strip():
        raise SystemExit(f"the first read failed: {out.strip()}")
    genievm("instant", "abort", started["instant"], cwd=folder)
    return to_started, to_read


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,64", help="disk sizes in GiB, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="folder for the repositories (default: temporary)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    conn = libvirt.open("qemu:///system")
    results: list[Result] = []
    for size_gib in (int(s) for s in args.sizes.split(",")):
        folder = Path(tempfile.mkdtemp(prefix=f"instant-{size_gib}g-", dir=args.work))
        try:
            prepared = time.perf_counter()
            name = backed_up(conn, folder, size_gib * GiB)
            backup_seconds = time.perf_counter() - prepared
            runs = [one_run(conn, folder, name, i) for i in range(args.runs)]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        results.append(Result(size_gib, round(backup_seconds, 1), [round(r[0], 2) for r in runs],
                              [round(r[1], 2) for r in runs]))  # fmt: skip
    conn.close()
    worst = max(max(r.first_read_seconds) for r in results)
    if args.json:
        print(json.dumps({"goal_seconds": GOAL, "results": [asdict(r) for r in results]}, indent=2))
    else:
        print(f"{'disk':>6} {'backup':>8} {'started (median, max)':>24} {'first read (median, max)':>26}")
        for r in results:
            started, read = r.started_seconds, r.first_read_seconds
            print(f"{r.size_gib:>4} GiB {r.backup_seconds:>6} s {statistics.median(started):>12.2f} s "
                  f"{max(started):>7.2f} s {statistics.median(read):>13.2f} s {max(read):>8.2f} s")  # fmt: skip
        print(f"goal: first read within {GOAL:.0f} s: {'met' if worst <= GOAL else 'missed'} (worst {worst:.2f} s)")
    return 0 if worst <= GOAL else 1

if __name__ == "__main__":
    sys.exit(main())
