"""Benchmark the VMware provider's HTTPS datastore transport against ``curl`` of the same file, on vcsim.

vcsim (govmomi's vSphere API simulator, built by plugins/genievm_vmware/tests/vcsim/build.sh)
runs on 127.0.0.1 with TLS; a scratch VM gets one thin disk (default 1 GiB) whose flat
extent is filled with random data through the datastore's /folder URL (random: vcsim
sends what it holds, so the figure is of bytes actually moved). Then:

    upload          one PUT of the whole disk (what a restore through https does at the end)
    curl            curl --cacert CA -o /dev/null URL: every byte of the flat file (the baseline)
    https-read      genievm's HTTPSTransport: ranged GETs of 4 MiB, in order, one thread (as the
                    engine reads one disk)
    backup          genievm backup --provider vmware -o transport=https into a fresh encrypted
                    repository (zstd level 3, the defaults): snapshot, CBT areas from the test
                    double, the engine, the snapshot removed

Wall seconds and MB/s per step, and the ratio of each to curl. vcsim, the VM, the data and
the repository are removed at the end. Times are never asserted on.

    .venv/bin/python benchmarks/bench_vmware.py [--size 1G] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import MIB, machine, parse_size  # noqa: E402
from genievm_vmware.connection import Endpoint, session_cookie, ssl_context  # noqa: E402
from genievm_vmware.describe import vm_disks  # noqa: E402
from genievm_vmware.testing import datastore_url, from_env, remove_vm, scratch_vm, start_vcsim  # noqa: E402
from genievm_vmware.transport import DiskLocation  # noqa: E402
from genievm_vmware.transport.https import HTTPSTransport  # noqa: E402

READ = 4 * MIB


def upload(url: str, ca: Path, size: int, folder: Path) -> float:
    data = folder / "disk.raw"
    with data.open("wb") as f:
        for _ in range(size // (64 * MIB)):
            f.write(os.urandom(64 * MIB))
        f.write(os.urandom(size % (64 * MIB)))
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "-f", "--cacert", str(ca), "-T", str(data), url], check=True)
    elapsed = time.perf_counter() - start
    data.unlink()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", default="1G", type=parse_size)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size: int = args.size
    sim_ctx = None
    sim = from_env()
    if sim is None:
        sim_ctx = start_vcsim()
        sim = sim_ctx.__enter__()
    steps: dict[str, float] = {}
    try:
        with sim.connect() as si, tempfile.TemporaryDirectory(prefix="genievm-bench-vmware-") as tmp:
            vm = scratch_vm(si, f"genievm-bench-{secrets.token_hex(3)}", [size])
            try:
                disk = vm_disks(list(vm.config.hardware.device))[0]
                flat = disk.path.removesuffix(".vmdk") + "-flat.vmdk"
                url = datastore_url(sim, flat)
                steps["upload"] = upload(url, sim.ca_file, size, Path(tmp))

                start = time.perf_counter()
                subprocess.run(["curl", "-sS", "-f", "--cacert", str(sim.ca_file), "-o", "/dev/null", url], check=True)
                steps["curl"] = time.perf_counter() - start

                ep = Endpoint(sim.host, sim.port, sim.user, sim.password, sim.ca_file)
                transport = HTTPSTransport(
                    host=sim.host, port=sim.port, cookie=session_cookie(si), context=ssl_context(ep)
                )
                handle = transport.open(DiskLocation(vm._moId, "DC0", disk.datastore, disk.path, disk.capacity))
                start = time.perf_counter()
                for offset in range(0, size, READ):
                    handle.read(offset, min(READ, size - offset))
                steps["https-read"] = time.perf_counter() - start
                handle.close()
                transport.close()

                genievm = str(Path(sys.executable).with_name("genievm"))
                env = {**os.environ, "GENIEVM_PASSPHRASE": "bench", "GENIEVM_VMWARE_PASSWORD": sim.password,
                       "GENIEVM_JOB_DB": f"{tmp}/jobs.sqlite"}  # fmt: skip
                repo = f"{tmp}/repo"
                subprocess.run([genievm, "repo", "init", repo], check=True, env=env, capture_output=True)
                start = time.perf_counter()
                subprocess.run(
                    [genievm, "backup", "--vm", vm.name, "--repo", repo, "--provider", "vmware", *sim.options(),
                     "-o", "transport=https"],
                    check=True, env=env, capture_output=True,
                )  # fmt: skip
                steps["backup"] = time.perf_counter() - start
            finally:
                remove_vm(vm)
    finally:
        if sim_ctx is not None:
            sim_ctx.__exit__(None, None, None)
    rows: list[dict[str, Any]] = [
        {
            "step": k,
            "seconds": round(v, 3),
            "mb_per_s": round(size / v / 1e6, 1),
            "vs_curl": round(v / steps["curl"], 2),
        }
        for k, v in steps.items()
    ]
    if args.json:
        print(json.dumps({"size": size, "machine": machine(), "steps": rows}, indent=2))
    else:
        print(f"VMware https transport on vcsim, a {size / MIB:.0f} MiB disk of random data")
        print(f"{'step':<12} {'seconds':>8} {'MB/s':>8} {'x curl':>7}")
        for r in rows:
            print(f"{r['step']:<12} {r['seconds']:>8.2f} {r['mb_per_s']:>8.1f} {r['vs_curl']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
