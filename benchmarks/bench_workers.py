"""Throughput of the workers: the same backups with 1, 2 and 3 `genievm worker` processes on this machine.

For each worker count it starts a private redis-server (scripts/services/redis.sh), a fresh encrypted
filesystem repository and a fresh shared job state (SQLite: one host), then that many workers (each its own
folder and job registry, ``--concurrency`` jobs each), queues a backup of every VM and waits until all have
ended. The VMs are raw images (``--vms`` of ``--size``, half of each random data, the rest a hole), the same
for every round; every round starts from an empty repository, so each backup stores its whole disk.

Per round it prints the wall time from the first job queued to the last ended, VMs/min and GB/min (disk bytes
examined), and the CPU the workers used (user+system of the worker processes, from ``os.wait4``) against the
machine's cores: a round whose workers use close to every core is CPU-bound (hashing, zstd, AES-GCM in the
workers' threads), and more workers cannot add throughput; one that uses much less is bound by what each job
waits for (the job's start: opening the repository and its lock; the disk; the shared state).

    .venv/bin/python benchmarks/bench_workers.py [--vms 12] [--size 64M] [--workers 1,2,3] [--concurrency 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENIEVM = [sys.executable, "-m", "genievm_core"]
PASSPHRASE = "bench_workers passphrase"


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def _images(folder: Path, count: int, size: int) -> dict[str, Path]:
    images = {}
    for i in range(count):
        path = folder / f"bench{i:02d}.img"
        rng = random.Random(i)
        with path.open("wb") as f:
            f.truncate(size)
            for offset in range(0, size // 2, 1 << 20):
                f.write(rng.randbytes(min(1 << 20, size // 2 - offset)))
        images[f"bench{i:02d}"] = path
    return images


def _round(work: Path, images: dict[str, Path], workers: int, concurrency: int) -> dict[str, Any]:
    from genievm_worker.state import SharedJobs
    from genievm_worker.submit import backup_spec, submit

    from genievm_core.api import BackupConfig

    started = subprocess.run(["bash", str(ROOT / "scripts/services/redis.sh"), "start"], capture_output=True,
                             text=True, check=True)  # fmt: skip
    folder, broker = started.stdout.split()
    round_dir = work / f"round-{workers}"
    round_dir.mkdir()
    database = f"sqlite:///{round_dir / 'shared.sqlite'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_")}
    env |= {"GENIEVM_PASSPHRASE": PASSPHRASE, "GENIEVM_BROKER_URL": broker, "GENIEVM_WORKER_DB": database}
    repo = round_dir / "repo"
    subprocess.run([*GENIEVM, "repo", "init", str(repo)], env=env | {"GENIEVM_JOB_DB": str(round_dir / "jobs.sqlite")},
                   check=True, capture_output=True)  # fmt: skip
    procs = []
    try:
        for n in range(workers):
            home = round_dir / f"w{n}"
            home.mkdir()
            log = (home / "worker.log").open("w")
            procs.append(subprocess.Popen(
                [*GENIEVM, "worker", "--name", f"w{n}", "--queues", "bench", "--concurrency", str(concurrency)],
                cwd=home, env=env | {"GENIEVM_JOB_DB": str(home / "jobs.sqlite")}, stdout=log, stderr=log,
                start_new_session=True,
            ))  # fmt: skip
        shared = SharedJobs(database)
        time.sleep(3)  # the workers connect (not counted)
        begin = time.monotonic()
        ids = []
        for vm, image in images.items():
            config = BackupConfig.model_validate({"vmId": vm, "backupPath": str(repo),
                                                  "providerOptions": {"vms": {vm: {"vda": str(image)}}}})  # fmt: skip
            ids.append(submit(shared, broker, backup_spec(config), "bench")[0])
        while not all(shared.get(i).finished for i in ids):
            time.sleep(0.2)
        wall = time.monotonic() - begin
        load = os.getloadavg()[0]  # every process's demand for the cores, ours and anyone else's
        failed = [i for i in ids if shared.get(i).state.value != "succeeded"]
        shared.close()
    finally:
        cpu = 0.0
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            _pid, _status, usage = os.wait4(proc.pid, 0)
            cpu += usage.ru_utime + usage.ru_stime
        subprocess.run(["bash", str(ROOT / "scripts/services/redis.sh"), "stop", folder], check=False)
    examined = sum(p.stat().st_size for p in images.values())
    cores = os.cpu_count() or 1
    return {
        "workers": workers, "concurrency": concurrency, "vms": len(images), "failed": len(failed),
        "wall_seconds": round(wall, 2), "vms_per_minute": round(len(images) * 60 / wall, 1),
        "gb_per_minute": round(examined / 1e9 * 60 / wall, 3), "worker_cpu_seconds": round(cpu, 1),
        "cores_busy": round(cpu / wall, 2), "cores": cores, "load_average": round(load, 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=12)
    parser.add_argument("--size", type=_size, default=_size("64M"))
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genievm-bench-workers-"))
    try:
        images = _images(work, args.vms, args.size)
        rows = [_round(work, images, int(n), args.concurrency) for n in args.workers.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.vms} VMs of {args.size >> 20} MiB ({args.size >> 21} MiB data each), {os.cpu_count()} cores")
    print("workers  wall s  VMs/min  GB/min  worker CPU s  cores busy  load avg  failed")
    for r in rows:
        print(f"{r['workers']:>7}  {r['wall_seconds']:>6}  {r['vms_per_minute']:>7}  {r['gb_per_minute']:>6}  "
              f"{r['worker_cpu_seconds']:>12}  {r['cores_busy']:>5} of {r['cores']}  {r['load_average']:>8}  "
              f"{r['failed']:>6}")  # fmt: skip
    last = rows[-1]
    if last["load_average"] >= 0.9 * last["cores"]:
        bound = (f"the CPU: the workers used {last['cores_busy']} of {last['cores']} cores and the load average was "
                 f"{last['load_average']}: the cores were full (the rest other processes on this machine), so more "
                 "workers only share them (hashing, zstd and AES-GCM run in the workers' threads)")
    else:
        bound = ("not the CPU: each job's fixed cost (its start, the repository's open and lock, the shared state) "
                 "and the disk")
    print(f"saturation: {bound}")


if __name__ == "__main__":
    main()
