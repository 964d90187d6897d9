"""Benchmark the ``aws`` provider's backups against moto's EBS direct APIs, on this machine.

moto (EC2 and EBS, served over HTTP on 127.0.0.1 by this process, with the volume
contents the plugin's tests add: plugins/genievm_aws/tests/moto_ebs.py) holds an
instance with one 1 GiB volume, of which ``--size`` (default 256 MiB) is random data
(random: nothing compresses or deduplicates, so the figures are of bytes moved). Then:

    get-blocks      GetSnapshotBlock of every block of one snapshot, in order, one thread,
                    from a plain boto3 client: what moto serves, the baseline
    backup-1        genievm backup --provider aws -o blockThreads=1 into a fresh encrypted
                    repository (zstd level 3): CreateSnapshots, ListSnapshotBlocks, every
                    block read and its checksum checked, the engine, the snapshots removed
    backup-8        the same with -o blockThreads=8 (the default), into another repository
    vms             genievm vms --provider aws: the fixed cost every command pays (a process,
                    the plugins, the clients, one DescribeInstances), in every backup's time below
    incremental     1 % of the blocks rewritten, then a backup with -o keepSnapshots=1 after a
                    kept full: ListChangedBlocks, and only the changed blocks read

Each genievm runs as its own process (as a user runs it), so moto's server and genievm
never share an interpreter lock. Wall seconds, MB/s of the data (the incremental's of the
changed data) and the ratio to get-blocks. Times are never asserted on.

What it measures: the plugin's and the engine's cost per block and per chunk, and how much
parallel block reads win over one thread, with moto as the other end.
What it does not: AWS itself. moto answers from memory on the same machine in Python; EBS
direct has per-call latency of milliseconds over a network, per-snapshot request quotas
(throttling, which the plugin retries) and throughput limits, and a real CreateSnapshots
takes minutes before its snapshots are completed, where moto's are at once. Read these
figures as the overhead GenieVM adds, not as what a backup from AWS will reach.

    .venv/bin/python benchmarks/bench_aws.py [--size 256M] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "plugins" / "genievm_aws" / "tests"))
import boto3  # noqa: E402
from bench import MIB, machine, parse_size  # noqa: E402
from moto_ebs import BLOCK, VOLUMES, moto_aws, write_volume  # noqa: E402

REGION = "eu-west-1"


def launch(ec2: Any) -> tuple[str, str]:
    image = ec2.describe_images()["Images"][0]["ImageId"]
    answer = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 1}}],
    )  # fmt: skip
    instance = answer["Instances"][0]
    return instance["InstanceId"], instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]


def get_blocks(ec2: Any, ebs: Any, volume: str) -> float:
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    blocks = ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]
    start = time.perf_counter()
    for b in blocks:
        ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])[
            "BlockData"
        ].read()
    elapsed = time.perf_counter() - start
    ec2.delete_snapshot(SnapshotId=snapshot)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", default="256M", type=parse_size)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size: int = min(args.size // BLOCK * BLOCK, 1 << 30)
    steps: dict[str, tuple[float, int]] = {}
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIABENCHMARK0000000", "AWS_SECRET_ACCESS_KEY": "bench",
           "GENIEVM_PASSPHRASE": "bench"}  # fmt: skip
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    genievm = str(Path(sys.executable).with_name("genievm"))
    with moto_aws() as endpoint, tempfile.TemporaryDirectory(prefix="genievm-bench-aws-") as tmp:
        env["GENIEVM_JOB_DB"] = f"{tmp}/jobs.sqlite"
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
        ebs = boto3.client("ebs", region_name=REGION, endpoint_url=endpoint)
        instance, volume = launch(ec2)
        for offset in range(0, size, 64 * MIB):
            write_volume(volume, offset, os.urandom(min(64 * MIB, size - offset)))
        steps["get-blocks"] = (get_blocks(ec2, ebs, volume), size)
        aws = ["--provider", "aws", "-o", f"region={REGION}", "-o", f"endpointUrl={endpoint}"]

        def backup(repo: str, *more: str) -> float:
            if not Path(repo).exists():
                subprocess.run([genievm, "repo", "init", repo], check=True, env=env, capture_output=True)
            start = time.perf_counter()
            subprocess.run([genievm, "backup", "--vm", instance, "--repo", repo, *aws, *more], check=True, env=env,
                           capture_output=True)  # fmt: skip
            return time.perf_counter() - start

        start = time.perf_counter()
        subprocess.run([genievm, "vms", *aws], check=True, env=env, capture_output=True)
        steps["vms"] = (time.perf_counter() - start, 0)
        steps["backup-1"] = (backup(f"{tmp}/repo1", "-o", "blockThreads=1"), size)
        steps["backup-8"] = (backup(f"{tmp}/repo8", "-o", "blockThreads=8"), size)
        backup(f"{tmp}/repo-inc", "-o", "keepSnapshots=1")
        changed = max(1, size // BLOCK // 100)
        for i in range(changed):
            write_volume(volume, i * 100 * BLOCK % size, os.urandom(BLOCK))
        steps["incremental"] = (backup(f"{tmp}/repo-inc", "-o", "keepSnapshots=1"), changed * BLOCK)
        VOLUMES.clear()
    base = steps["get-blocks"][0]
    rows = [
        {
            "step": k,
            "seconds": round(s, 3),
            "mb_per_s": round(n / s / 1e6, 1) if n else None,
            "vs_get_blocks": round(s / base, 2),
        }
        for k, (s, n) in steps.items()
    ]
    if args.json:
        print(json.dumps({"size": size, "machine": machine(), "steps": rows}, indent=2))
    else:
        print(f"aws provider against moto on 127.0.0.1, {size / MIB:.0f} MiB of random data on a 1 GiB volume")
        print("(the overhead GenieVM adds to an EBS direct server, not AWS's throughput: see the docstring)")
        print(f"{'step':<12} {'seconds':>8} {'MB/s':>8} {'x get':>7}")
        for r in rows:
            rate = "-" if r["mb_per_s"] is None else f"{r['mb_per_s']:.1f}"
            print(f"{r['step']:<12} {r['seconds']:>8.2f} {rate:>8} {r['vs_get_blocks']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
