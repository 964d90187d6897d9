"""What the server's tests share: a real server in a subprocess, a site of image VMs, PostgreSQL databases."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[3]
POSTGRES_SH = ROOT / "scripts" / "services" / "postgres.sh"
PASSPHRASE = "a server-side passphrase 7f3a"
GENIEVM = [sys.executable, "-m", "genievm_core"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_image(path: Path, size: int, seed: int) -> Path:
    """A sparse raw image with a few MiB of data that depends on ``seed``."""
    with path.open("wb") as f:
        f.truncate(size)
        for i in range(2):
            f.seek(i * (size // 2))
            f.write(bytes([(seed + i) % 251 + 1]) * 65536 + os.urandom(4096))
    return path


def ext4_disk(folder: Path) -> Path:
    """A 32 MiB disk that is one ext4 filesystem (no partition table) with /etc/hostname and /srv/data."""
    source = folder / "guest"
    (source / "etc").mkdir(parents=True)
    (source / "srv" / "data").mkdir(parents=True)
    (source / "etc" / "hostname").write_text("files01\n")
    (source / "srv" / "data" / "report.csv").write_bytes(b"id,value\n" + os.urandom(3000).hex().encode())
    (source / "srv" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (source / "srv" / "run.sh").chmod(0o750)
    disk = folder / "files01.img"
    subprocess.run(
        ["/usr/sbin/mkfs.ext4", "-q", "-F", "-d", str(source), "-E", "root_owner=0:0", str(disk), "32M"],
        check=True,
        capture_output=True,
    )
    return source


def genievm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*GENIEVM, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"genievm {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A running PostgreSQL: the suite's (GENIEVM_TEST_POSTGRES_URL), or a private one for this run."""
    given = os.environ.get("GENIEVM_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    out = subprocess.run(["bash", str(POSTGRES_SH), "start"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/services/postgres.sh start failed: {out.stderr}")
    folder, url = out.stdout.split()
    try:
        yield url
    finally:
        subprocess.run(["bash", str(POSTGRES_SH), "stop", folder], check=False)


@contextmanager
def postgres_database(cluster: str) -> Iterator[str]:
    """A fresh, empty database of the cluster; dropped afterwards."""
    name = f"genievm_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(cluster, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.engine.make_url(cluster).set(database=name))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Site:
    """Image VMs web01, web02 and db01, and an encrypted repository ``main``, with the server's settings."""

    root: Path
    database: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        path = self.root / "server.json"
        path.write_text(json.dumps(self.settings))
        return path


@dataclass
class ServerProcess:
    site: Site
    process: subprocess.Popen[str]
    url: str
    log: Path
    verify: ssl.SSLContext | bool = True
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, role: str) -> str:
        if role not in self.tokens:
            self.tokens[role] = genievm(
                "server", "token", "create", "--role", role, "-c", str(self.site.config)
            ).stdout.strip()
        return self.tokens[role]

    def client(self, role: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(role)}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, verify=self.verify, timeout=60)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(60)


def start_server(site: Site, *args: str, scheme: str = "http", cafile: Path | None = None) -> ServerProcess:
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=cafile) if cafile else True
    port = free_port()
    site.settings["port"] = port
    log = site.root / f"server-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*GENIEVM, "server", "-c", str(site.config), *args], stdout=out, stderr=out, text=True
        )
    server = ServerProcess(site, process, f"{scheme}://127.0.0.1:{port}", log, verify)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{server.url}/api/v1/health", verify=verify, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"the server did not answer within 60 s: {log.read_text()}")


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {timeout} s")
