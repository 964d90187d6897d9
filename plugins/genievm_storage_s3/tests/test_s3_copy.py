"""``genievm repo copy`` into and between repositories in S3 (a real moto server over HTTP).

A copy from a filesystem repository into S3 is SIGKILLed mid-way and run again: the second run sends
only what the first did not (no chunk object the first one wrote is written again), and the copy then
verifies with ``--read-data`` and restores bit for bit; then that copy is copied on, S3 to S3, into a
repository of other keys, and verified and restored there too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from genievm_core.jobs import run_backup
from genievm_core.models.config import BackupConfig
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.storage import open_storage
from genievm_core.testing import run_cli

CHUNK = 65536
CHUNKS = 32  # 2 MiB of random data: at 0.2 MB/s the first run takes 10 s at the least, killed after 3 chunks
PASSPHRASE = "source passphrase"
OFFSITE = "offsite passphrase"
THIRD = "third passphrase"


def chunk_etags(s3_admin: Any, bucket: str, prefix: str) -> dict[str, str]:
    pages = s3_admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/chunks/")
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def has_manifest(s3_admin: Any, bucket: str, prefix: str) -> bool:
    return bool(s3_admin.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/manifests/").get("Contents"))


def genievm(*args: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("genievm")
    base = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_")}
    return subprocess.Popen([str(exe), *args], env=base | dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_copy_to_s3_killed_and_resumed_sends_nothing_twice_and_copies_on_to_s3(
    s3_bucket: str,
    s3_options: dict[str, Any],
    s3_admin: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "GENIEVM_JOB_DB": str(tmp_path / "jobs.sqlite"),
        "GENIEVM_STORAGE_OPTIONS": json.dumps(s3_options),
        "GENIEVM_PASSPHRASE": PASSPHRASE,
        "GENIEVM_TO_PASSPHRASE": OFFSITE,
    }
    monkeypatch.setenv("GENIEVM_JOB_DB", env["GENIEVM_JOB_DB"])
    image = tmp_path / "disk.img"
    image.write_bytes(random.Random(9).randbytes(CHUNKS * CHUNK))
    host = PluginHost()
    source = Repository.init(open_storage(host, str(tmp_path / "src")), passphrase=PASSPHRASE, chunk_size=CHUNK)
    vms = {"vms": {"web": {"vda": str(image)}}}
    manifest = run_backup(host, BackupConfig(vm_id="web", backup_path=source.url, provider_options=vms), source)
    dst = f"s3://{s3_bucket}/offsite"
    Repository.init(open_storage(host, dst, s3_options), passphrase=OFFSITE, chunk_size=CHUNK)

    first = genievm("repo", "copy", str(tmp_path / "src"), dst, "--limit-write", "0.2", env=env)
    try:
        while len(chunk_etags(s3_admin, s3_bucket, "offsite")) < 3:
            assert first.poll() is None, first.communicate()
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    sent_before = chunk_etags(s3_admin, s3_bucket, "offsite")
    assert first.returncode == -signal.SIGKILL
    assert not has_manifest(s3_admin, s3_bucket, "offsite"), "the copy ended before it was killed"
    assert 3 <= len(sent_before) < CHUNKS

    code, out, err = run_cli(monkeypatch, capsys, "repo", "copy", str(tmp_path / "src"), dst, "--json", env=env)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["backups_copied"] == 1
    assert stats["chunks_sent"] + stats["chunks_present"] == CHUNKS
    assert stats["chunks_present"] == len(sent_before)  # every chunk the killed run stored: found, not sent
    after = chunk_etags(s3_admin, s3_bucket, "offsite")
    assert {key: after[key] for key in sent_before} == sent_before  # none of them written again
    assert len(after) == CHUNKS

    offsite_env = env | {"GENIEVM_PASSPHRASE": OFFSITE, "GENIEVM_TO_PASSPHRASE": THIRD}
    code, out, err = run_cli(monkeypatch, capsys, "verify", "--repo", dst, "--read-data", env=offsite_env)
    assert code == 0, err
    third = f"s3://{s3_bucket}/third"
    Repository.init(open_storage(host, third, s3_options), passphrase=THIRD, chunk_size=CHUNK)
    code, out, err = run_cli(monkeypatch, capsys, "repo", "copy", dst, third, "--json", env=offsite_env)
    assert code == 0, err
    assert (json.loads(out)["backups_copied"], json.loads(out)["chunks_sent"]) == (1, CHUNKS)

    for url, passphrase in ((dst, OFFSITE), (third, THIRD)):
        check = env | {"GENIEVM_PASSPHRASE": passphrase}
        code, _out, err = run_cli(monkeypatch, capsys, "verify", "--repo", url, "--read-data", env=check)
        assert code == 0, err
        target = tmp_path / f"restore-{url.rsplit('/', 1)[1]}"
        args = ("restore", "--repo", url, "--vm", "web", "--backup", manifest.backup_id, "--target", str(target))
        code, _out, err = run_cli(monkeypatch, capsys, *args, env=check)
        assert code == 0, err
        assert (target / "vda.img").read_bytes() == image.read_bytes()
