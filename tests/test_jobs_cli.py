"""Two processes, one registry: a real ``genievm backup`` process, paused, resumed and cancelled from here.

The backup runs in its own process; ``genievm jobs ...`` runs in this one (``cli``)
and ``genievm jobs watch`` in a third. Only the job registry connects them.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from jobs_support import (
    MIB,
    env_with,
    init_repo,
    run_backup_process,
    scanned,
    start_backup,
    stored_chunks,
    wait_for_job,
)
from support import CLIResult, genievm_path, random_bytes, write_image

from genievm_core.jobs import JobRegistry, JobState
from genievm_core.testing.cli import error_lines

Run = Callable[..., CLIResult]


def test_pause_resume_cancel_from_another_process_then_run_again(cli: Run, tmp_path: Path) -> None:
    db, repo = Path(os.environ["GENIEVM_JOB_DB"]), tmp_path / "repo"
    image = write_image(tmp_path / "vda.img", 24 * MIB, [(0, random_bytes(24 * MIB, 3))])
    env = env_with(db)
    init_repo(repo, env)
    registry = JobRegistry(db)
    backup = start_backup(repo, image, env, level=19)
    job = wait_for_job(registry, lambda r: r.state is JobState.RUNNING and scanned(r) > 0, backup)
    paused = cli("jobs", "pause", job.id, "--json", "--wait", "60")
    assert paused.code == 0, paused.stderr
    assert json.loads(paused.stdout)["state"] == "paused"
    watch = subprocess.Popen(
        [genievm_path(), "jobs", "watch", job.id[:6], "--json", "--interval", "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    first = json.loads(watch.stdout.readline())  # the watcher is up, and sees the pause
    assert first["id"] == job.id and first["state"] == "paused"
    shown = json.loads(cli("jobs", "show", job.id, "--json").stdout)
    assert shown["state"] == "paused" and shown["kind"] == "backup" and shown["pid"] == backup.pid
    assert [d["disk"] for d in shown["disks"]] == ["vda"] and shown["disks"][0]["total"] == 24 * MIB
    again = cli("jobs", "pause", job.id)
    assert again.code == 27 and again.err_lines == [f"genievm: error: job {job.id} is paused; it cannot be paused"]
    listed = json.loads(cli("jobs", "list", "--state", "paused", "--json").stdout)
    assert [j["id"] for j in listed] == [job.id]

    resumed = cli("jobs", "resume", job.id, "--json", "--wait", "60")
    assert json.loads(resumed.stdout)["state"] == "running"
    assert json.loads(cli("jobs", "pause", job.id[:8], "--json", "--wait", "60").stdout)["state"] == "paused"
    cancelled = cli("jobs", "cancel", job.id, "--json", "--wait", "60")  # a paused job can be cancelled
    assert json.loads(cancelled.stdout)["state"] == "cancelled"

    _out, err = backup.communicate(timeout=120)
    assert backup.returncode == 24
    assert error_lines(err) == [f"genievm: error: job {job.id} was cancelled"]
    assert not (repo / "manifests").exists() or not any((repo / "manifests").iterdir())
    assert not list(repo.glob("locks/*"))
    out, _ = watch.communicate(timeout=60)
    assert watch.returncode == 0
    states = [json.loads(line)["state"] for line in out.splitlines()]
    assert states[-1] == "cancelled"

    kept = stored_chunks(repo)
    assert 0 < len(kept) < 24
    rerun = run_backup_process(repo, image, env)  # a cancelled backup run again re-uses what it stored
    assert rerun["stats"]["chunks_new"] == 24 - len(kept)  # type: ignore[index]
    assert cli("jobs", "cancel", job.id).code == 27
    missing = cli("jobs", "show", "ffffffffffff")
    assert missing.code == 26 and len(missing.err_lines) == 1
