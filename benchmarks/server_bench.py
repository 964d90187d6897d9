"""Benchmark the GenieVM server: API latency under concurrent clients, and the scheduler's overhead.

    .venv/bin/python benchmarks/server_bench.py [--clients 100] [--requests 20] [--vms 1000] [--database URL]

It makes a site in a temporary folder: an image provider listing ``--vms`` VMs (their images are never
read) and an empty repository, and ``--vms / 10`` policies of 10 VMs each. Then:

    api        the real server (uvicorn in a subprocess on 127.0.0.1): ``--clients`` threads, each with its
               own connection, call GET /api/v1/policies, /api/v1/jobs and /api/v1/providers/lab/vms in
               turn, ``--requests`` times; p50, p99 and max latency, and requests per second
    scheduler  in this process: a scheduler tick over every policy when none is due (the cost the server
               pays every ``scheduler_interval``), and the time to queue one run per VM when all are due
               (the runs are queued, not started)

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "genievm_server" / "tests"))

from genievm_server.policy import Policy  # noqa: E402
from genievm_server.scheduler import Scheduler  # noqa: E402
from genievm_server.service import Service  # noqa: E402
from genievm_server.settings import ServerSettings  # noqa: E402
from server_support import Site, genievm, start_server  # noqa: E402


def make_site(root: Path, vms: int, database: str | None) -> Site:
    repo = root / "repo"
    genievm("--job-db", str(root / "jobs.sqlite"), "repo", "init", str(repo), "--encryption", "none")
    settings = {
        "repositories": {"main": {"url": str(repo)}},
        "providers": {
            "lab": {
                "plugin": "image",
                "options": {"vms": {f"vm{i:04d}": {"vda": str(root / f"vm{i:04d}.img")} for i in range(vms)}},
            }
        },
        "job_db": str(root / "jobs.sqlite"),
        "database": database or f"sqlite:///{root / 'server.sqlite'}",
        "scheduler_interval": 3600,
    }
    return Site(root, settings["database"], settings)


def add_policies(service: Service, vms: int) -> None:
    for p in range(vms // 10):
        names = [f"vm{i:04d}" for i in range(p * 10, p * 10 + 10)]
        policy = Policy.model_validate(
            {
                "name": f"p{p:03d}",
                "provider": "lab",
                "repository": "main",
                "vms": names,
                "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
            }
        )
        service.store.add_policy(policy.name, policy.model_dump(mode="json", exclude={"enabled"}), True)
        service.store.set_last_slot(policy.name, datetime.now(UTC).isoformat())


def bench_api(site: Site, clients: int, requests: int) -> None:
    server = start_server(site)
    token = server.token("read-only")
    paths = ["/api/v1/policies", "/api/v1/jobs", "/api/v1/providers/lab/vms"]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        mine = []
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
            start.wait()
            for i in range(requests):
                began = time.perf_counter()
                try:
                    answer = c.get(paths[i % len(paths)])
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                mine.append(time.perf_counter() - began)
                if answer.status_code != 200:
                    errors.append(f"{answer.status_code} {answer.text[:100]}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    server.stop()
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(
        f"api        {clients} clients x {requests} requests: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms, {len(latencies) / wall:.0f} requests/s, "
        f"{len(errors)} errors"
    )
    for error, count in sorted(Counter(errors).items()):
        print(f"           {count} x {error}")


def bench_scheduler(service: Service, vms: int) -> None:
    scheduler = Scheduler(service)
    scheduler._start_queued = lambda now: None  # type: ignore[method-assign]  # queue only: no backups
    ticks = []
    for _ in range(5):
        began = time.perf_counter()
        scheduler.tick()
        ticks.append(time.perf_counter() - began)
    assert not service.store.runs(), "nothing was due"
    for row in service.store.policies():
        service.store.set_last_slot(row.name, (datetime.now(UTC) - timedelta(days=3)).isoformat())
    began = time.perf_counter()
    scheduler.tick()
    due = time.perf_counter() - began
    queued = len(service.store.runs(limit=100_000))
    print(
        f"scheduler  {vms // 10} policies of 10 VMs: a tick with none due {statistics.median(ticks) * 1000:.1f} ms "
        f"(median of 5); all due: {queued} runs queued in {due:.2f} s ({due / max(queued, 1) * 1000:.2f} ms a run)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--database", help="a SQLAlchemy URL (default: SQLite in the temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genievm-server-bench-") as folder:
        site = make_site(Path(folder), args.vms, args.database)
        service = Service(ServerSettings.model_validate(site.settings))
        add_policies(service, args.vms)
        bench_api(site, args.clients, args.requests)
        bench_scheduler(service, args.vms)
        service.close()


if __name__ == "__main__":
    main()
