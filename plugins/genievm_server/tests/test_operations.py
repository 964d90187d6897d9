"""The server as an operator runs it: `genievm policies` through the API, a server killed mid-job and
started again, webhooks on a local receiver, and /metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from server_support import GENIEVM, PASSPHRASE, ServerProcess, Site, free_port, wait_job

from genievm_core.api import GenieVM
from genievm_core.jobs import JobRegistry

POLICY = {
    "name": "nightly",
    "provider": "lab",
    "repository": "main",
    "vms": ["web01"],
    "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
    "backup": {"keepLast": 3, "pruneAfterBackup": True},
}


def policies(server: ServerProcess, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"GENIEVM_SERVER": server.url, "GENIEVM_SERVER_TOKEN": server.token(role)}
    return subprocess.run([*GENIEVM, "policies", *args], capture_output=True, text=True, env=env, timeout=120)


def test_policies_through_the_cli(server: ServerProcess, tmp_path: Path) -> None:
    file = tmp_path / "policy.json"
    file.write_text(json.dumps(POLICY))
    created = policies(server, "admin", "create", str(file))
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["spec"]["schedule"]["timezone"] == "Europe/Berlin"
    assert policies(server, "read-only", "list").stdout == "nightly\tenabled\t0 2 * * * (Europe/Berlin)\n"
    assert policies(server, "operator", "disable", "nightly").returncode == 0
    assert json.loads(policies(server, "read-only", "show", "nightly").stdout)["enabled"] is False
    assert policies(server, "operator", "enable", "nightly").returncode == 0
    queued = json.loads(policies(server, "operator", "run-now", "nightly").stdout)
    assert [(r["vm"], r["state"]) for r in queued] == [("web01", "queued")]
    with server.client("read-only") as client:
        deadline = time.monotonic() + 120
        while (runs := client.get("/api/v1/policies/nightly/runs").json())[0]["state"] != "succeeded":
            assert time.monotonic() < deadline and runs[0]["state"] in ("queued", "running"), runs
            time.sleep(0.3)
        assert wait_job(client, runs[0]["job_id"])["result"]["prune"] is not None  # keepLast: pruned after

    again = policies(server, "admin", "create", str(file))
    assert (again.returncode, again.stderr) == (3, "genievm: error: policy nightly exists\n")
    reader = policies(server, "read-only", "delete", "nightly")
    assert reader.returncode == 3 and "has role read-only; this needs admin" in reader.stderr
    file.write_text(json.dumps(POLICY | {"name": "bad", "schedule": {"cron": "0 25 * * *"}}))
    bad = policies(server, "admin", "create", str(file))
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1 and "is not a cron expression" in bad.stderr
    file.write_text(json.dumps(POLICY | {"name": "elsewhere", "repository": "offsite"}))
    missing = policies(server, "admin", "create", str(file))
    assert missing.returncode == 3 and "no repository offsite" in missing.stderr
    assert policies(server, "admin", "delete", "nightly").returncode == 0
    gone = policies(server, "read-only", "show", "nightly")
    assert (gone.returncode, gone.stderr) == (3, "genievm: error: no policy nightly\n")
    with server.client("read-only") as client:  # nothing half-created by the refused ones
        assert client.get("/api/v1/policies").json() == []


def test_a_killed_server_leaves_no_job_running(
    server_factory: Callable[..., ServerProcess], site: Site, tmp_path: Path
) -> None:
    site.settings["lock_wait"] = 120
    server = server_factory()
    with server.client("operator") as client:
        done = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "web02", "repository": "main"})
        assert wait_job(client, done.json()["id"])["state"] == "succeeded"
        file = tmp_path / "policy.json"
        file.write_text(json.dumps(POLICY))
        assert policies(server, "admin", "create", str(file)).returncode == 0
        with GenieVM(job_db=Path(site.settings["job_db"])) as other:
            repo = other.open_repository(site.settings["repositories"]["main"]["url"], passphrase=PASSPHRASE)
            with repo.lock("exclusive", "a test's maintenance"):  # the policy's backup waits for it
                assert policies(server, "operator", "run-now", "nightly").returncode == 0
                deadline = time.monotonic() + 60
                while not (running := client.get("/api/v1/jobs", params={"state": "running"}).json()):
                    assert time.monotonic() < deadline, "the policy's backup did not start"
                    time.sleep(0.2)
                server.stop(signal.SIGKILL)
                [job] = running
                registry = JobRegistry(Path(site.settings["job_db"]))
                assert registry.get(job["id"]).state.value == "running"  # as the killed server left it
                registry.close()
                server = server_factory()
    with server.client("read-only") as client:
        interrupted = client.get(f"/api/v1/jobs/{job['id']}").json()
        assert interrupted["state"] == "failed" and "interrupted" in interrupted["error"]
        deadline = time.monotonic() + 120
        while True:
            runs = client.get("/api/v1/policies/nightly/runs").json()
            if runs[0]["state"] == "succeeded":
                break
            assert time.monotonic() < deadline, runs
            time.sleep(0.3)
        assert [r["state"] for r in runs] == ["succeeded", "failed"]  # run again once, on restart
        backups = client.get("/api/v1/repositories/main/backups").json()["backups"]
        assert sorted(b["vm"] for b in backups) == ["web01", "web02"]  # the one that had completed is there
        assert not client.get("/api/v1/jobs", params={"state": "running"}).json()


class _Receiver(BaseHTTPRequestHandler):
    """Keeps each body it is sent; answers a path with the statuses planned for it, in turn, then 204."""

    received: list[dict[str, Any]] = []
    tries: list[tuple[float, str, int]] = []  # when, path, the status answered
    plan: dict[str, list[int]] = {}

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        planned = self.plan.get(self.path, [])
        status = planned.pop(0) if planned else 204
        self.tries.append((time.monotonic(), self.path, status))
        if status == 204:
            self.received.append(json.loads(body))
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _receiving(handler: type[_Receiver]) -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    with _receiving(type("Receiver", (_Receiver,), {"received": received, "tries": [], "plan": {}})) as url:
        yield f"{url}/hook", received


@pytest.fixture
def flaky_receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    """A receiver whose answers the test plans (``plan``), and the handler class that holds its ``tries``."""
    handler = type("FlakyReceiver", (_Receiver,), {"received": [], "tries": [], "plan": {}})
    with _receiving(handler) as url:
        yield url, handler


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[int, _Mailbox]]:
    """A local SMTP server (aiosmtpd) that keeps what it is sent."""
    from aiosmtpd.controller import Controller

    box = _Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, box
    controller.stop()


def test_webhooks_and_metrics(
    server_factory: Callable[..., ServerProcess],
    site: Site,
    receiver: tuple[str, list[dict[str, Any]]],
    mailbox: tuple[int, _Mailbox],
    tmp_path: Path,
) -> None:
    url, received = receiver
    site.settings["webhooks"] = [{"url": url}, {"url": url, "on": ["success"]}]
    site.settings["email"] = [
        {"host": "127.0.0.1", "port": mailbox[0], "sender": "genievm@example.org", "to": ["ops@example.org"]}
    ]
    site.settings["providers"]["lab"]["options"]["vms"]["gone01"] = {"vda": str(tmp_path / "missing.img")}
    server = server_factory()
    with server.client("operator") as client:
        ok = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "web01", "repository": "main"})
        assert wait_job(client, ok.json()["id"])["state"] == "succeeded"
        failed = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "gone01", "repository": "main"})
        assert wait_job(client, failed.json()["id"])["state"] == "failed"
        deadline = time.monotonic() + 30
        while len(received) < 2 or not mailbox[1].messages:
            assert time.monotonic() < deadline, received
            time.sleep(0.1)
        metrics = client.get("/metrics").text
    by_event = {r["event"]: r["job"] for r in received}
    assert sorted(by_event) == ["job.failure", "job.success"] and len(received) == 2
    assert by_event["job.failure"]["vm"] == "gone01" and "missing.img" in by_event["job.failure"]["error"]
    assert by_event["job.success"]["id"] == ok.json()["id"]
    assert 'genievm_jobs_total{kind="backup",result="failed"} 1.0' in metrics
    assert 'genievm_jobs_total{kind="backup",result="succeeded"} 1.0' in metrics
    assert 'genievm_backup_last_success_timestamp_seconds{vm="web01"}' in metrics
    assert 'genievm_backup_read_bytes{vm="web01"}' in metrics and 'vm="gone01"' not in metrics.split("jobs_total")[0]
    assert "genievm_scheduler_queue_length 0.0" in metrics

    [(sender, to, mail)] = mailbox[1].messages  # on failure only
    assert (sender, to) == ("genievm@example.org", ["ops@example.org"])
    assert "Subject: GenieVM: backup of gone01 failed" in mail and "missing.img" in mail
    assert PASSPHRASE not in mail


def test_a_stopped_server_runs_its_cancelled_runs_when_back(
    server_factory: Callable[..., ServerProcess], site: Site, tmp_path: Path
) -> None:
    site.settings["lock_wait"] = 120
    server = server_factory()
    file = tmp_path / "policy.json"
    file.write_text(json.dumps(POLICY))
    assert policies(server, "admin", "create", str(file)).returncode == 0
    with GenieVM(job_db=Path(site.settings["job_db"])) as other:
        repo = other.open_repository(site.settings["repositories"]["main"]["url"], passphrase=PASSPHRASE)
        with server.client("read-only") as client, repo.lock("exclusive", "a test's maintenance"):
            assert policies(server, "operator", "run-now", "nightly").returncode == 0
            deadline = time.monotonic() + 60
            while not (running := client.get("/api/v1/jobs", params={"state": "running"}).json()):
                assert time.monotonic() < deadline, "the policy's backup did not start"
                time.sleep(0.2)
            began = time.monotonic()
            assert server.stop() == 0  # SIGTERM: a clean stop, soon, though the job waits for a lock
            assert time.monotonic() - began < 30
    registry = JobRegistry(Path(site.settings["job_db"]))
    assert registry.get(running[0]["id"]).state.value == "cancelled"
    registry.close()
    server = server_factory()
    with server.client("read-only") as client:
        deadline = time.monotonic() + 120
        while (runs := client.get("/api/v1/policies/nightly/runs").json())[0]["state"] != "succeeded":
            assert time.monotonic() < deadline, runs
            time.sleep(0.3)
        assert len(runs) == 1 and runs[0]["job_id"] != running[0]["id"]


def test_a_failing_webhook_is_retried_with_back_off_a_bounded_number_of_times(
    server_factory: Callable[..., ServerProcess], site: Site, flaky_receiver: tuple[str, type[_Receiver]]
) -> None:
    url, receiver = flaky_receiver
    receiver.plan = {"/recovers": [503, 500], "/down": [503] * 10, "/refuses": [400, 400]}
    site.settings["webhooks"] = [
        {"url": f"{url}/recovers", "on": ["success"], "retries": 3, "backoff": 0.5},
        {"url": f"{url}/down", "on": ["success"], "retries": 2, "backoff": 0.2},
        {"url": f"{url}/refuses", "on": ["success"], "retries": 3, "backoff": 0.2},  # a 4xx is not tried again
    ]
    server = server_factory()
    with server.client("operator") as client:
        ok = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "web01", "repository": "main"})
        assert wait_job(client, ok.json()["id"])["state"] == "succeeded"
    deadline = time.monotonic() + 30
    while not receiver.received:
        assert time.monotonic() < deadline, receiver.tries
        time.sleep(0.1)
    time.sleep(2.0)  # longer than any further retry would wait
    by_path: dict[str, list[tuple[float, int]]] = {}
    for when, path, status in receiver.tries:
        by_path.setdefault(path, []).append((when, status))
    assert [status for _, status in by_path["/recovers"]] == [503, 500, 204]
    first, second, third = (when for when, _ in by_path["/recovers"])
    assert second - first >= 0.45 and third - second >= 0.95  # 0.5 s, then twice as long
    assert [status for _, status in by_path["/down"]] == [503, 503, 503]  # one try and two retries, no more
    assert [status for _, status in by_path["/refuses"]] == [400]
    assert [r["job"]["id"] for r in receiver.received] == [ok.json()["id"]]
    log = server.log.read_text()
    assert "webhook.retry" in log and "attempts=3" in log and "attempts=1 error='HTTP 400'" in log
