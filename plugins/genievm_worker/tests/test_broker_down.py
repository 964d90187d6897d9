"""The broker down for a while (redis-server stopped, then started again on its folder and port): a running job
finishes, the CLI says in one line that the broker is unreachable (exit 36) and records nothing, a worker started
meanwhile waits for it, and the jobs queued before the outage run when it is back. One host: the shared job
state is SQLite, as for a single-host site."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from genievm_worker.state import SharedJobs
from worker_support import Env, redis_pause, redis_resume, redis_server, start_worker, wait_for, write_image


@pytest.mark.slow
def test_jobs_queued_before_the_broker_went_down_run_when_it_is_back(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    with redis_server() as (broker, folder):
        env = Env(tmp_path, broker, f"sqlite:///{tmp_path / 'shared.sqlite'}")
        repo = str(tmp_path / "repo")
        env.genievm("repo", "init", repo, "--chunk-size", str(256 << 10))
        images = {f"vm{i}-{tag}": write_image(tmp_path / f"vm{i}.img", (8 if i == 0 else 2) << 20, i) for i in range(3)}
        slow, *others = images
        first = start_worker(env, "w1", "--queues", f"q1-{tag}")
        later = None
        shared = SharedJobs(env.database)
        try:
            running = env.backup(slow, images[slow], repo, f"q1-{tag}", bandwidthLimitWrite=1)
            queued = [env.backup(vm, images[vm], repo, f"q2-{tag}") for vm in others]  # no worker listens yet
            wait_for("the slow backup to run", lambda: shared.get(running).state.value == "running", interval=0.1)
            listed = env.jobs()
            assert [(listed[i]["state"], "waiting for a worker" in listed[i]["description"]) for i in queued] == [
                ("pending", True), ("pending", True)
            ]  # fmt: skip

            redis_pause(folder)
            refused = env.genievm("jobs", "submit", "backup", "--vm", others[0], "--disk", f"vda={images[others[0]]}",
                                  "--repo", repo, "--queue", f"q2-{tag}", check=False)  # fmt: skip
            assert refused.returncode == 36
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"genievm: error: the broker at {broker} is unreachable")
            assert lines[0].endswith("job not queued")
            assert len(shared.recent(limit=100)) == 3  # nothing recorded for the refused job
            later = start_worker(env, "w2", "--queues", f"q2-{tag}")  # it waits for the broker
            ended = env.wait_ended([running])  # the running job finishes without the broker
            assert ended[running].state.value == "succeeded", ended[running].error
            assert [shared.get(i).state.value for i in queued] == ["pending", "pending"]

            redis_resume(folder, broker)
            ended = env.wait_ended(queued)
            assert {i: (r.state.value, r.host) for i, r in ended.items()} == {i: ("succeeded", "w2") for i in queued}
        finally:
            shared.close()
            for worker in (first, later):
                if worker is not None:
                    worker.stop()
                    print(f"--- {worker.name}\n{worker.log.read_text()[-3000:]}")
