"""Scale-out end to end: three `genievm worker` processes (each its own folder and job registry), a shared job
state in a real PostgreSQL, a real redis-server as broker, one filesystem and one S3 (moto) repository, twelve
VMs (ten image VMs, two KVM VMs of the real libvirtd); one worker is SIGKILLed in the middle of an upload and
its job is finished by another; nothing is left running on the hypervisor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from genievm_worker.state import Attempt, SharedJobs
from genievm_worker.submit import prune_spec
from worker_support import (
    S3_KEYS,
    SERVICES,
    Env,
    Worker,
    moto_server,
    postgres_database,
    start_worker,
    wait_for,
    write_image,
)

from genievm_core.api import RetentionPolicy
from genievm_core.jobs import JobRecord

CHUNK = 256 << 10
SMALL = 2 << 20  # each small VM: a 2 MiB disk, 1 MiB of it data
BIG = 16 << 20  # the one the kill interrupts: 8 MiB of data, written at 2 MB/s
LEASE = 6.0


def _states(jobs: dict[str, JobRecord]) -> dict[str, str]:
    return {i: r.state.value + (f": {r.error}" if r.error else "") for i, r in jobs.items()}


def _overlaps(spans: list[tuple[Any, Any]]) -> int:
    """The most spans that cover one moment."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def _span(a: Attempt) -> tuple[Any, Any]:
    """When an attempt ran: a killed one (never ended) until at most one heartbeat interval after its last."""
    return a.started_at, a.ended_at or a.heartbeat_at + timedelta(seconds=LEASE / 6)


@pytest.fixture
def kvm_vms(tmp_path: Path) -> Iterator[dict[str, tuple[Any, Path]]]:
    """Two paused KVM VMs of the real libvirtd, a 4 MiB qcow2 disk each (1 MiB of data): name -> (domain, raw
    copy of the disk's content)."""
    if os.geteuid() != 0 or shutil.which("libvirtd") is None:
        pytest.skip("the KVM VMs need root and libvirtd (scripts/setup.sh installs it)")
    import libvirt
    from genievm_kvm.testing import remove_vm, scratch_domain_xml

    subprocess.run(["bash", str(SERVICES / "libvirtd.sh")], check=True, capture_output=True)
    conn = libvirt.open("qemu:///system")
    made: dict[str, tuple[Any, Path]] = {}
    try:
        for i in range(2):
            name = f"genievm-workers-{uuid.uuid4().hex[:6]}"
            raw = write_image(tmp_path / f"{name}.raw", 2 << 20, 100 + i)
            disk = tmp_path / f"{name}.qcow2"
            subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(disk)], check=True)
            dom = conn.defineXML(scratch_domain_xml(name, {"vda": (disk, "qcow2")}))
            made[name] = (dom, raw)
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        yield made
    finally:
        for dom, _raw in made.values():
            remove_vm(dom)
        conn.close()


@pytest.mark.slow
def test_three_workers_back_up_twelve_vms_and_survive_a_killed_worker(
    tmp_path: Path, redis_url: str, postgres: str, kvm_vms: dict[str, tuple[Any, Path]]
) -> None:
    tag = uuid.uuid4().hex[:6]
    queue = f"site-{tag}"
    with postgres_database(postgres) as database, moto_server(tmp_path) as s3:
        env = Env(tmp_path, redis_url, database, extra={**S3_KEYS, "AWS_ENDPOINT_URL": s3})
        bucket = f"genievm-workers-{tag}"
        boto3.client("s3", endpoint_url=s3, **{k.lower(): v for k, v in S3_KEYS.items() if "KEY" in k},
                     region_name="us-east-1").create_bucket(Bucket=bucket)  # fmt: skip
        repos = {"fs": str(tmp_path / "repo-fs"), "s3": f"s3://{bucket}/site"}
        for url in repos.values():
            env.genievm("repo", "init", url, "--chunk-size", str(CHUNK))
        images = tmp_path / "images"
        images.mkdir()
        vms = {f"vm{i:02d}-{tag}": write_image(images / f"vm{i:02d}.img", BIG if i == 0 else SMALL, i)
               for i in range(10)}  # fmt: skip
        vms |= {name: raw for name, (_dom, raw) in kvm_vms.items()}  # restored, they must equal these
        big = next(iter(vms))
        repo_of = {vm: repos["fs"] if i % 2 else repos["s3"] for i, vm in enumerate(vms)}
        slow = tmp_path / "slow.json"  # the big VM's backup, throttled so that the kill lands mid-upload
        slow.write_text(json.dumps({"bandwidthLimitWrite": 2}))

        workers = {name: start_worker(env, name, "--queues", queue, lease=LEASE) for name in ("w1", "w2", "w3")}
        try:
            first = env.submit("backup", "--config", str(slow), "--vm", big, "--disk", f"vda={vms[big]}",
                               "--repo", repo_of[big], "--queue", queue)  # fmt: skip  # by the CLI
            shared = SharedJobs(database)

            def uploading() -> str | None:
                record = shared.get(first)
                stored = sum(d.stored for d in record.disks)
                return record.host if record.state.value == "running" and 0 < stored < BIG // 2 else None

            victim = workers[wait_for("the big backup to be uploading", uploading, interval=0.1)]
            victim.kill()
            backups = [first]
            for i, (vm, image) in enumerate(vms.items()):
                caps = {"repository": 2} if repo_of[vm] == repos["fs"] else None
                if vm in kvm_vms:
                    backups.append(env.backup(vm, None, repo_of[vm], queue, caps=caps, provider="kvm",
                                              providerOptions={"uri": "qemu:///system"}))  # fmt: skip
                elif vm != big:
                    backups.append(env.backup(vm, image, repo_of[vm], queue, caps=caps))
                if 1 <= i <= 3:  # a second backup of three VMs at once: they must take turns
                    backups.append(env.backup(vm, image, repo_of[vm], queue))
            # garbage collection of both repositories while the backups run: it waits for its exclusive lock,
            # and deletes nothing a backup needs (the verify below reads every chunk)
            collections = [env.queue(prune_spec(url, RetentionPolicy(), None), queue) for url in repos.values()]
            jobs = env.wait_ended(backups + collections)
            assert _states(jobs) == {i: "succeeded" for i in backups + collections}
            # the interrupted backup was finished by another worker, which resumed it: what the killed worker
            # had stored was found in the repository, not uploaded again
            assert jobs[first].host != victim.name and jobs[first].host in workers
            tries = [a for a in shared.attempts(first) if a.outcome != "waited"]
            assert tries[0].worker == victim.name and tries[0].ended_at is None
            assert tries[-1].outcome == "succeeded"
            assert jobs[first].result is not None
            stats = jobs[first].result["stats"]
            assert stats["bytes_deduplicated"] > 0 and stats["bytes_new"] < BIG // 2
            # never two jobs on one VM at once; never more than two backups into the capped repository
            by_vm: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
            fs_spans = []
            for attempt in shared.attempts():
                record = shared.get(attempt.job_id)
                if attempt.outcome == "waited" or record.kind != "backup":  # given back before it took the lock
                    continue
                by_vm[record.vm or ""].append(_span(attempt))
                if record.repository == repos["fs"] and record.id != first:
                    fs_spans.append(_span(attempt))
            assert {vm: _overlaps(spans) for vm, spans in by_vm.items()} == {vm: 1 for vm in vms}
            assert _overlaps(fs_spans) <= 2
            assert sum(len(by_vm[vm]) for vm in list(vms)[1:4]) == 6

            # every backup verifies with its data read (queued by the CLI), and restores bit-identically
            checks = [env.submit("verify", "--repo", url, "--read-data", "--queue", queue) for url in repos.values()]
            restores = [env.restore(vm, repo_of[vm], tmp_path / "restored" / vm, queue) for vm in vms]
            jobs = env.wait_ended(checks + restores)
            assert _states(jobs) == {i: "succeeded" for i in checks + restores}
            assert [(jobs[c].result or {})["problems"] for c in checks] == [0, 0]
            assert sum((jobs[c].result or {})["backups"] for c in checks) == len(backups)
            for vm, image in vms.items():
                assert (tmp_path / "restored" / vm / "vda.img").read_bytes() == image.read_bytes(), vm
            # nothing left on the hypervisor: no backup job running, at most the checkpoint the next backup starts
            # from, the VMs as they were
            import libvirt

            for dom, _raw in kvm_vms.values():
                assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
                assert len(dom.listAllCheckpoints()) <= 1
                assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
            # and `genievm jobs list` shows them all, each with the worker that ran it
            listed = env.jobs()
            assert {i: (listed[i]["state"], listed[i]["host"] in workers) for i in backups + checks + restores} == {
                i: ("succeeded", True) for i in backups + checks + restores
            }
            shared.close()
        finally:
            for worker in workers.values():
                worker.stop()
            _show_logs(workers)


def _show_logs(workers: dict[str, Worker]) -> None:
    for worker in workers.values():  # on failure pytest shows what the workers said
        print(f"--- {worker.name}\n{worker.log.read_text()[-3000:]}")
