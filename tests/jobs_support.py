"""Helpers for the tests that run a real ``genievm backup`` process and follow it through the job registry."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from support import genievm_path

from genievm_core.jobs import JobRecord, JobRegistry

MIB = 1 << 20


def env_with(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_")}
    return env | {"GENIEVM_JOB_DB": str(db)} | extra


def init_repo(repo: Path, env: dict[str, str], chunk_size: int = MIB) -> None:
    subprocess.run(
        [genievm_path(), "repo", "init", str(repo), "--chunk-size", str(chunk_size), "--encryption", "none"],
        env=env,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )


def start_backup(repo: Path, image: Path, env: dict[str, str], *, level: int) -> subprocess.Popen[str]:
    """``genievm backup --json`` of VM ``v`` with one disk, in its own process."""
    cmd = [genievm_path(), "backup", "--vm", "v", "--repo", str(repo), "--disk", f"vda={image}"]
    return subprocess.Popen(
        [*cmd, "--compression-level", str(level), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def run_backup_process(repo: Path, image: Path, env: dict[str, str], *, level: int = 1) -> dict[str, object]:
    proc = start_backup(repo, image, env, level=level)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def wait_for_job(
    registry: JobRegistry, until: Callable[[JobRecord], bool], proc: subprocess.Popen[str] | None = None
) -> JobRecord:
    """The newest job once ``until`` holds for it; fails when ``proc`` ends first or after two minutes."""
    deadline = time.monotonic() + 120
    while True:
        jobs = registry.recent(limit=1)
        if jobs and until(jobs[0]):
            return jobs[0]
        if proc is not None:
            assert proc.poll() is None, f"the backup ended first: {proc.communicate()}"
        assert time.monotonic() < deadline, f"the job never got there: {jobs}"
        time.sleep(0.02)


def scanned(record: JobRecord) -> int:
    return sum(d.scanned for d in record.disks)


def stored_chunks(repo: Path) -> set[str]:
    root = repo / "chunks"
    return {p.name for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp")} if root.exists() else set()


def distinct_data_chunks(image: Path, chunk_size: int = MIB) -> int:
    """How many different non-zero chunks the image holds."""
    seen = set()
    with open(image, "rb") as f:
        while block := f.read(chunk_size):
            if block.count(0) != len(block):
                seen.add(hashlib.blake2b(block).digest())
    return len(seen)
