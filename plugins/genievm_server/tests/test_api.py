"""The REST API of a real server (uvicorn in a subprocess, on 127.0.0.1 and a free port), over a real
repository of image VMs: tokens and roles route by route, jobs, backups, errors, secrets, TLS."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from genievm_server.api.deps import ROLE_KEY
from genievm_server.app import create_app
from genievm_server.openapi import schema_text
from genievm_server.settings import ServerSettings
from server_support import PASSPHRASE, ServerProcess, Site, genievm, start_server, wait_job

from genievm_core.api import GenieVM
from genievm_core.jobs import JobRegistry
from genievm_core.jobs.job import Job

DOCS_SCHEMA = Path(__file__).resolve().parents[3] / "docs" / "server-openapi.json"
MUTATING = {"post", "put", "patch", "delete"}


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in schema["paths"].items() for method, op in item.items()]


def _call(client: httpx.Client, method: str, path: str) -> httpx.Response:
    url = re.sub(r"\{[^}]+\}", "x", path)
    return client.request(method, url, json={} if method in MUTATING else None)


def test_every_route_needs_a_token_and_its_role(server: ServerProcess) -> None:
    """Walks the served schema: a new route without a check fails here."""
    schema = server.client().get("/openapi.json").json()
    operations = _operations(schema)
    assert len(operations) >= 20
    for method, path, op in operations:
        if path == "/api/v1/health":
            continue
        with server.client(None) as anonymous:
            answer = _call(anonymous, method, path)
        assert answer.status_code == 401, f"{method} {path} without a token: {answer.status_code}"
        api = path.startswith("/api/") or path == "/metrics"  # the console's pages answer in HTML
        assert (answer.json()["error"]["code"] if api else answer.text.count('name="token"')) in (
            "NotAuthenticatedError",
            1,
        )
        if path == "/console/login":  # the one route that takes a token instead of needing one
            assert op[ROLE_KEY] == "none"
            continue
        assert op.get(ROLE_KEY) in ("read-only", "operator", "admin"), f"{method} {path} states no role"
        with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer gvm_0_forged"}) as forged:
            assert _call(forged, method, path).status_code == 401, f"{method} {path} with a forged token"
        if method in MUTATING:
            with server.client("read-only") as reader:
                answer = _call(reader, method, path)
            assert answer.status_code == 403, f"{method} {path} with a read-only token: {answer.status_code}"
            assert not api or answer.json()["error"] == {
                "code": "ForbiddenError",
                "exit": 3,
                "message": answer.json()["error"]["message"],
            }
        if op[ROLE_KEY] == "admin":
            with server.client("operator") as operator:
                assert _call(operator, method, path).status_code == 403, f"{method} {path} with an operator token"
    assert httpx.get(f"{server.url}/api/v1/health").json()["status"] == "ok"
    # the app serves nothing the schema does not list, but the schema itself (behind a token too)
    served = {(m.lower(), r.path) for r in create_app(ServerSettings()).routes for m in getattr(r, "methods", ())}
    assert {(m, p) for m, p in served if m != "head"} - {(m, p) for m, p, _ in operations} == {("get", "/openapi.json")}
    assert httpx.get(f"{server.url}/openapi.json").status_code == 401
    assert httpx.get(f"{server.url}/docs").status_code == 404


def test_the_checked_in_schema_is_the_servers(server: ServerProcess) -> None:
    served = json.dumps(server.client().get("/openapi.json").json(), indent=2, sort_keys=True) + "\n"
    assert schema_text() == served
    assert DOCS_SCHEMA.read_text() == schema_text(), (
        "docs/server-openapi.json is out of date: .venv/bin/python -m genievm_server.openapi docs/server-openapi.json"
    )


def test_backup_restore_and_verify_through_the_api(server: ServerProcess, site: Site, tmp_path: Path) -> None:
    answers: list[str] = []
    with server.client("operator") as client:
        vms = client.get("/api/v1/providers/lab/vms").json()
        assert [vm["name"] for vm in vms] == ["db01", "web01", "web02"]
        started = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "web01", "repository": "main"})
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            text = "".join(events.iter_text())
        answers.append(text)
        kinds = re.findall(r"^event: (\w+)$", text, re.M)
        assert kinds[-1] == "end" and kinds.count("end") == 1
        last = json.loads(re.findall(r"^data: (.*)$", text, re.M)[-1])
        assert last["state"] == "succeeded", last
        [disk] = last["disks"]
        assert (disk["disk"], disk["total"], disk["done"]) == ("vda", 8 << 20, True)
        backup_id = last["result"]["backup_id"]

        listed = client.get("/api/v1/repositories/main/backups", params={"vm": "web01"}).json()
        assert [b["backup_id"] for b in listed["backups"]] == [backup_id]
        manifest = client.get(f"/api/v1/repositories/main/backups/{backup_id}").json()
        assert manifest["vm"]["id"] == "web01" and [d["name"] for d in manifest["disks"]] == ["vda"]
        stats = client.get("/api/v1/repositories/main/stats").json()
        assert (stats["backups"], stats["vms"]) == (1, 1)

        target = Path(site.settings["restore_root"]) / "restored"
        restore = client.post(
            "/api/v1/jobs/restore", json={"repository": "main", "vm": "web01", "restore_path": str(target)}
        )
        assert restore.status_code == 202, restore.text
        assert wait_job(client, restore.json()["id"])["state"] == "succeeded"
        original = Path(site.settings["providers"]["lab"]["options"]["vms"]["web01"]["vda"])
        assert (target / "vda.img").read_bytes() == original.read_bytes()

        verify = client.post("/api/v1/jobs/verify", json={"repository": "main", "vm": "web01", "read_data": True})
        verified = wait_job(client, verify.json()["id"])
        assert (verified["kind"], verified["state"]) == ("verify", "succeeded")

        listed_jobs = client.get("/api/v1/jobs", params={"state": "succeeded"}).json()
        assert {j["kind"] for j in listed_jobs} == {"backup", "restore", "verify"}
        for path in (
            "/api/v1/jobs",
            f"/api/v1/jobs/{job_id}",
            "/api/v1/repositories",
            "/api/v1/providers",
            "/api/v1/plugins",
        ):
            answers.append(client.get(path).text)
    server.stop()
    # the passphrase came from the server's file: it is in no answer and no line the server wrote
    assert not any(PASSPHRASE in text for text in answers)
    assert PASSPHRASE not in server.log.read_text()
    assert "vms" not in json.dumps(answers[-2])  # the providers' options are not shown


def test_errors_are_json_with_a_stable_code(server: ServerProcess, tmp_path: Path) -> None:
    with server.client("admin") as client:

        def error(response: httpx.Response, status: int) -> dict[str, Any]:
            assert response.status_code == status, response.text
            body: dict[str, Any] = response.json()["error"]
            assert set(body) == {"code", "exit", "message"} and "\n" not in body["message"]
            return body

        assert error(client.get("/api/v1/repositories/nope/stats"), 404)["code"] == "UnknownNameError"
        assert error(client.get("/api/v1/jobs/ffffffffffff"), 404) | {"message": ""} == {
            "code": "JobNotFoundError",
            "exit": 26,
            "message": "",
        }
        assert (
            error(client.get("/api/v1/repositories/main/backups/latest", params={"vm": "web01"}), 404)["code"]
            == "BackupNotFoundError"
        )
        bad_json = client.post(
            "/api/v1/jobs/backup", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert error(bad_json, 422)["code"] == "InvalidRequestError"
        unknown = client.post(
            "/api/v1/jobs/backup", json={"provider": "lab", "vm": "web01", "repository": "main", "passphrase": "x"}
        )
        assert "passphrase" in error(unknown, 422)["message"]
        assert error(client.get("/api/v1/nothing-here"), 404)["code"] == "UnknownNameError"
        outside = client.post(
            "/api/v1/jobs/restore", json={"repository": "main", "vm": "web01", "restore_path": "/etc"}
        )
        assert "/etc is not under the restore_root" in error(outside, 400)["message"]
        climbing = client.post(
            "/api/v1/jobs/restore", json={"repository": "main", "vm": "web01", "restore_path": "../escape"}
        )
        assert error(climbing, 400)["code"] == "ConfigError"
        # a backup of a VM the provider does not have: the job fails with the CLI's exit code for it
        started = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "nope", "repository": "main"})
        failed = wait_job(client, started.json()["id"])
        assert (failed["state"], failed["exit_code"]) == ("failed", 7)
        assert error(client.post(f"/api/v1/jobs/{failed['id']}/cancel"), 409)["code"] == "JobStateError"


def test_one_backup_of_a_vm_at_a_time(server: ServerProcess, site: Site) -> None:
    """A backup of the VM runs in another process (the CLI's, say): the server refuses a second one."""
    registry = JobRegistry(Path(site.settings["job_db"]))

    class ElsewhereBackup(Job):
        kind = "backup"

        def execute(self) -> dict[str, Any]:
            raise AssertionError("never run")

    other = ElsewhereBackup(description="backup of web01", vm="web01")
    registry.add(other)  # pending, owned by this (live) process
    with server.client("operator") as client:
        refused = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "web01", "repository": "main"})
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "VMBusyError" and other.id in refused.json()["error"]["message"]
        other_vm = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "web02", "repository": "main"})
        assert wait_job(client, other_vm.json()["id"])["state"] == "succeeded"
    registry.close()


def test_a_non_loopback_address_needs_tls_or_insecure(site: Site) -> None:
    refused = genievm("server", "-c", str(site.config), "--host", "0.0.0.0", check=False)
    assert refused.returncode == 3
    assert refused.stderr.strip().splitlines() == [
        "genievm: error: invalid configuration: --host 0.0.0.0: not a loopback address and no TLS "
        "(give --cert and --key, or --insecure)"
    ]
    half = genievm("server", "-c", str(site.config), "--cert", "/nonexistent.pem", check=False)
    assert half.returncode == 3 and "--cert and --key: give both or neither" in half.stderr


def test_tls_with_a_certificate_and_key(site: Site, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = start_server(site, "--cert", str(cert), "--key", str(key), scheme="https", cafile=cert)
    try:
        with server.client("read-only") as client:
            assert client.get("/api/v1/repositories").json() == [
                {"name": "main", "url": site.settings["repositories"]["main"]["url"]}
            ]
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate
            httpx.get(f"{server.url}/api/v1/health")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on that port
            httpx.get(server.url.replace("https", "http") + "/api/v1/health")
    finally:
        assert server.stop() == 0


def test_a_revoked_token_is_refused(server: ServerProcess, site: Site) -> None:
    token = server.token("read-only")
    with server.client("read-only") as client:
        assert client.get("/api/v1/jobs").status_code == 200
    listed = json.loads(genievm("server", "token", "list", "-c", str(site.config)).stdout)
    assert token not in json.dumps(listed)
    token_id = next(t["id"] for t in listed if t["role"] == "read-only")
    genievm("server", "token", "revoke", token_id, "-c", str(site.config))
    with server.client("read-only") as client:
        assert client.get("/api/v1/jobs").status_code == 401


def test_genievm_api_sees_the_servers_jobs(server: ServerProcess, site: Site) -> None:
    """The server's jobs are the core's: `genievm jobs` (here its library API) lists them."""
    with server.client("operator") as client:
        started = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "db01", "repository": "main"})
        wait_job(client, started.json()["id"])
    with GenieVM(job_db=Path(site.settings["job_db"])) as api:
        assert api.job(started.json()["id"]).state.value == "succeeded"


def test_pause_resume_and_cancel(server: ServerProcess, site: Site) -> None:
    """A backup that waits for a repository lock another client holds: paused, resumed, then cancelled."""
    site.settings["lock_wait"] = 120
    with GenieVM(job_db=Path(site.settings["job_db"])) as other, server.client("operator") as client:
        repo = other.open_repository(site.settings["repositories"]["main"]["url"], passphrase=PASSPHRASE)
        with repo.lock("exclusive", "a test's maintenance"):
            job_id = client.post(
                "/api/v1/jobs/backup", json={"provider": "lab", "vm": "web01", "repository": "main"}
            ).json()["id"]

            def state_becomes(state: str) -> None:
                deadline = time.monotonic() + 30
                while client.get(f"/api/v1/jobs/{job_id}").json()["state"] != state:
                    assert time.monotonic() < deadline, f"job {job_id} did not become {state}"
                    time.sleep(0.1)

            state_becomes("running")
            assert client.post(f"/api/v1/jobs/{job_id}/pause").json()["requested"] == "pause"
            state_becomes("paused")
            assert client.post(f"/api/v1/jobs/{job_id}/resume").status_code == 200
            state_becomes("running")
            assert client.post(f"/api/v1/jobs/{job_id}/stop").status_code == 422  # not an action
            assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
            assert wait_job(client, job_id, timeout=30)["state"] == "cancelled"
        assert client.get("/api/v1/repositories/main/backups").json()["backups"] == []


def test_insecure_allows_a_non_loopback_address(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory("--host", "0.0.0.0", "--insecure")
    with server.client("read-only") as client:  # reached on 127.0.0.1, one of all the addresses
        assert client.get("/api/v1/repositories").status_code == 200


def test_prune_by_the_keep_rules_a_dry_run_first_and_the_last_gc_in_the_stats(server: ServerProcess) -> None:
    with server.client("operator") as client:

        def backup(vm: str) -> str:
            started = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": vm, "repository": "main"})
            done = wait_job(client, started.json()["id"])
            assert done["state"] == "succeeded", done
            return str(done["result"]["backup_id"])

        web01 = [backup("web01") for _ in range(3)]
        web02 = backup("web02")
        assert client.get("/api/v1/repositories/main/stats").json()["last_gc"] is None
        assert client.post("/api/v1/repositories/main/prune", json={"keep_last": 0}).status_code == 422

        rules = {"vms": ["web01"], "keep_last": 1}
        dry = client.post("/api/v1/repositories/main/prune", json=rules | {"dry_run": True})
        assert dry.status_code == 202, dry.text
        planned = wait_job(client, dry.json()["id"])
        assert (planned["kind"], planned["state"]) == ("prune", "succeeded")
        assert planned["result"]["dry_run"] is True
        assert sorted(planned["result"]["removed_backups"]) == sorted(web01[:2])
        listed = client.get("/api/v1/repositories/main/backups").json()["backups"]
        assert len(listed) == 4
        assert client.get("/api/v1/repositories/main/stats").json()["last_gc"] is None  # a dry run is no GC

        pruned = wait_job(client, client.post("/api/v1/repositories/main/prune", json=rules).json()["id"])
        assert pruned["state"] == "succeeded" and sorted(pruned["result"]["removed_backups"]) == sorted(web01[:2])
        listed = client.get("/api/v1/repositories/main/backups").json()["backups"]
        assert sorted(b["backup_id"] for b in listed) == sorted([web01[2], web02])

        stats = client.get("/api/v1/repositories/main/stats").json()
        assert (stats["last_gc"], stats["last_gc_job"]) == (pruned["finished_at"], pruned["id"])
        assert stats["backups"] == 2 and stats["dedup_ratio"] == round(stats["backups_size"] / stats["stored_size"], 2)
        assert stats["dedup_ratio"] > 1  # sparse, compressible images
