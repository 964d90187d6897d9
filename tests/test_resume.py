"""A backup killed with SIGKILL mid-way, then run again, re-uses every chunk the first run stored.

The first run is a real ``genievm backup`` process. The kill point is made
deterministic through the job registry: once the job has examined 4 MiB it is
paused from here (as ``genievm jobs pause`` does), and killed once paused.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from jobs_support import (
    MIB,
    distinct_data_chunks,
    env_with,
    init_repo,
    run_backup_process,
    scanned,
    start_backup,
    stored_chunks,
    wait_for_job,
)
from support import genievm_path, open_repo, random_bytes, write_image

from genievm_core.jobs import JobRegistry, JobState, run_verify
from genievm_core.plugin import PluginHost


def test_backup_killed_then_run_again_stores_no_chunk_twice_and_verifies(tmp_path: Path) -> None:
    db, repo = tmp_path / "jobs.sqlite", tmp_path / "repo"
    image = write_image(
        tmp_path / "vda.img", 256 * MIB, [(0, random_bytes(24 * MIB, 1)), (200 * MIB, random_bytes(8 * MIB, 2))]
    )
    total = distinct_data_chunks(image)
    env = env_with(db)
    init_repo(repo, env)
    registry = JobRegistry(db)

    first = start_backup(repo, image, env, level=19)  # slow on random data: it is still running when paused
    job = wait_for_job(registry, lambda r: r.state is JobState.RUNNING and scanned(r) >= 4 * MIB, first)
    registry.request(job.id, "pause")
    wait_for_job(registry, lambda r: r.state is JobState.PAUSED, first)
    watch = subprocess.Popen(
        [genievm_path(), "jobs", "watch", job.id, "--json", "--interval", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None and json.loads(watch.stdout.readline())["state"] == "paused"
    first.send_signal(signal.SIGKILL)
    first.communicate()
    out, _ = watch.communicate(timeout=60)  # the watcher notices the process is gone, and stops
    last = json.loads(out.splitlines()[-1])
    assert watch.returncode == 0 and last["state"] == "failed" and last["error"].startswith("interrupted")
    before = stored_chunks(repo)
    assert 0 < len(before) < total
    assert not (repo / "manifests").exists() or not any((repo / "manifests").iterdir())

    second = run_backup_process(repo, image, env)
    stats = second["stats"]
    assert isinstance(stats, dict)
    assert stats["chunks_new"] == total - len(before)  # nothing the first run stored is stored again
    assert stats["chunks_deduplicated"] == len(before)
    assert stats["bytes_read"] == 32 * MIB  # read again, all of it: holes are not read
    assert len(stored_chunks(repo)) == total

    killed = registry.get(job.id)  # the second run's stale-job sweep found the first one dead
    assert killed.state is JobState.FAILED and "interrupted" in (killed.error or "")
    assert registry.get(str(second["job_id"])).state is JobState.SUCCEEDED
    host = PluginHost()
    reports = run_verify(host, open_repo(host, repo), open_repo(host, repo).manifests(), read_data=True)
    assert len(reports) == 2 and all(r.ok for r in reports)
