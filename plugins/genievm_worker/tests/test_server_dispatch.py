"""The server's scheduler with a broker in its settings: a policy's backups go to a worker process instead of
the server's own, their runs settle from the shared job state (in the server's database), and the backups are
in the repository."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from genievm_server.policy import Policy
from genievm_server.scheduler import Scheduler
from genievm_server.service import Service
from genievm_server.settings import ServerSettings
from worker_support import PASSPHRASE, Env, start_worker, wait_for, write_image

from genievm_core.api import GenieVM


@pytest.mark.slow
def test_scheduled_backups_run_on_a_worker(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = uuid.uuid4().hex[:6]
    database = f"sqlite:///{tmp_path / 'server.sqlite'}"
    env = Env(tmp_path, redis_url, database)
    repo = tmp_path / "repo"
    env.genievm("repo", "init", str(repo))
    vms = {f"web{i}-{tag}": {"vda": str(write_image(tmp_path / f"web{i}.img", 2 << 20, i))} for i in range(2)}
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    monkeypatch.setenv("GENIEVM_JOB_DB", str(tmp_path / "server-state" / "jobs.sqlite"))
    settings = ServerSettings.model_validate({
        "database": database, "broker": redis_url, "job_db": str(tmp_path / "server-state" / "jobs.sqlite"),
        "repositories": {"main": {"url": str(repo), "passphrase_file": str(passphrase)}},
        "providers": {"lab": {"plugin": "image", "options": {"vms": vms}}},
    })  # fmt: skip
    service = Service(settings)
    scheduler = Scheduler(service)
    worker = start_worker(env, "w1", "--queues", f"lab-{tag}")
    try:
        policy = Policy.model_validate({"name": "nightly", "provider": "lab", "repository": "main",
                                        "schedule": {"cron": "0 0 * * *"}, "queue": f"lab-{tag}"})  # fmt: skip
        service.store.add_policy(policy.name, policy.model_dump(mode="json", exclude={"enabled"}), True)
        scheduler.run_now("nightly")

        def settled() -> bool:
            scheduler.tick()
            runs = service.store.runs(limit=100)
            return len(runs) == 2 and all(r.finished_at for r in runs)

        wait_for("the runs to settle", settled, interval=0.5)
        runs = service.store.runs(limit=100)
        assert sorted((r.vm, r.state) for r in runs) == sorted((vm, "succeeded") for vm in vms)
        assert {service.job(r.job_id or "").host for r in runs} == {"w1"}  # the server's API sees the worker's jobs
        assert not [j for j in GenieVM(job_db=settings.job_db).registry.recent() if j.kind == "backup"]  # none here
        with GenieVM(job_db=tmp_path / "check" / "jobs.sqlite") as check:
            opened = check.open_repository(str(repo), passphrase)
            assert sorted(m.vm.id for m in opened.manifests()) == sorted(vms)
    finally:
        scheduler.stop()
        service.close()
        worker.stop()
        print(worker.log.read_text()[-3000:])
