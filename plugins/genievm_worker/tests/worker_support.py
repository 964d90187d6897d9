"""What the workers' tests share: real redis-server, PostgreSQL and moto processes (the suite's, or private ones
started through scripts/services/), workers as separate `genievm worker` processes, and small image VMs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from genievm_worker.state import SharedJobs
from genievm_worker.submit import backup_spec, restore_spec

from genievm_core.api import BackupConfig, RestoreConfig
from genievm_core.jobs import JobRecord

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ROOT / "scripts" / "services"
GENIEVM = [sys.executable, "-m", "genievm_core"]
PASSPHRASE = "a worker-side passphrase 51c0"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "genievm-test-key", "AWS_SECRET_ACCESS_KEY": "genievm-test-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
DEADLINE = 300.0  # seconds a wait may take before the test fails (a hang guard, not a timing check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], deadline: float = DEADLINE, interval: float = 0.3) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(interval)


def write_image(path: Path, size: int, seed: int) -> Path:
    """A sparse raw image of ``size`` bytes, data that depends on ``seed`` in its first half."""
    rng = __import__("random").Random(seed)
    with path.open("wb") as f:
        f.truncate(size)
        f.write(rng.randbytes(size // 2))
    return path


@dataclass
class Env:
    """The environment every process of a test gets: no GENIEVM_* of the caller; its own broker and database."""

    root: Path
    broker: str
    database: str
    extra: dict[str, str] = field(default_factory=dict)

    def vars(self, job_db: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GENIEVM_", "AWS_"))}
        env.update({"GENIEVM_JOB_DB": str(job_db), "GENIEVM_BROKER_URL": self.broker,
                    "GENIEVM_WORKER_DB": self.database, "GENIEVM_PASSPHRASE": PASSPHRASE,
                    "AWS_CONFIG_FILE": str(self.root / "no-aws-config"),
                    "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "no-aws-credentials"),
                    "AWS_EC2_METADATA_DISABLED": "true", **self.extra})  # fmt: skip
        return env

    def genievm(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """The CLI of the submitting host (its own job registry)."""
        result = subprocess.run(
            [*GENIEVM, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root,
            env=self.vars(self.root / "client" / "jobs.sqlite"),
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"genievm {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def submit(self, *args: str) -> str:
        """``genievm jobs submit ARGS``: the job's id."""
        return self.genievm("jobs", "submit", *args).stdout.strip()

    def queue(self, spec: dict[str, Any], queue: str) -> str:
        """What `genievm jobs submit` does, from this process (a CLI start costs seconds on a busy machine)."""
        from genievm_worker.submit import submit

        shared = SharedJobs(self.database)
        try:
            return submit(shared, self.broker, spec, queue)[0]
        finally:
            shared.close()

    def backup(self, vm: str, image: Path | None, repo: str, queue: str, **config: Any) -> str:
        """A backup of an image VM (its disk ``image``), or with ``provider`` and ``providerOptions`` in
        ``config`` of another provider's VM (``image`` None)."""
        caps = config.pop("caps", None)
        options = {"vms": {vm: {"vda": str(image)}}} if image is not None else {}
        backup = BackupConfig.model_validate({"vmId": vm, "backupPath": repo, "provider": "image",
                                              "providerOptions": options, **config})  # fmt: skip
        return self.queue(backup_spec(backup, caps), queue)

    def restore(self, vm: str, repo: str, target: Path, queue: str) -> str:
        config = RestoreConfig.model_validate({"vmId": vm, "backupPath": repo, "restorePath": str(target)})
        return self.queue(restore_spec(config), queue)

    def wait_ended(self, ids: list[str]) -> dict[str, JobRecord]:
        """The jobs once every one has ended (read from the shared job state)."""
        shared = SharedJobs(self.database)

        def ended() -> dict[str, JobRecord] | None:
            records = {i: shared.get(i) for i in ids}
            return records if all(r.finished for r in records.values()) else None

        try:
            return dict(wait_for(f"jobs {', '.join(ids)} to end", ended, interval=0.5))
        finally:
            shared.close()

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every job `genievm jobs list` shows, by id."""
        listed = json.loads(self.genievm("jobs", "list", "--limit", "1000", "--json").stdout)
        return {j["id"]: j for j in listed}


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[str]
    log: Path

    def kill(self) -> None:
        """SIGKILL, as a power loss would: no clean-up, no acknowledgement."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(60)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(60)


def start_worker(env: Env, name: str, *args: str, lease: float = 6, visibility: float = 12) -> Worker:
    """A worker in its own working directory with its own job registry, in its own process group."""
    home = env.root / "workers" / name
    home.mkdir(parents=True, exist_ok=True)
    log = home / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*GENIEVM, "worker", "--name", name, "--lease", str(lease), "--visibility-timeout", str(visibility),
             "--concurrency", "2", *args],
            cwd=home, env=env.vars(home / "jobs.sqlite"), stdout=out, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
    return Worker(name, process, log)


@contextmanager
def redis_server(port: int | None = None) -> Iterator[tuple[str, Path]]:
    """A private redis-server through scripts/services/redis.sh: its URL and folder; removed afterwards."""
    out = subprocess.run(["bash", str(SERVICES / "redis.sh"), "start", str(port or "")], capture_output=True,
                         text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"scripts/services/redis.sh start failed: {out.stderr}")
    folder, url = out.stdout.split()
    try:
        yield url, Path(folder)
    finally:
        subprocess.run(["bash", str(SERVICES / "redis.sh"), "stop", folder], check=False)


def redis_pause(folder: Path) -> None:
    subprocess.run(["bash", str(SERVICES / "redis.sh"), "pause", str(folder)], check=True)


def redis_resume(folder: Path, url: str) -> None:
    port = url.rsplit(":", 1)[1].split("/")[0]
    subprocess.run(["bash", str(SERVICES / "redis.sh"), "start", port, str(folder)], check=True,
                   capture_output=True)  # fmt: skip


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """The suite's PostgreSQL (GENIEVM_TEST_POSTGRES_URL), or a private one through scripts/services/postgres.sh."""
    given = os.environ.get("GENIEVM_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    out = subprocess.run(["bash", str(SERVICES / "postgres.sh"), "start"], capture_output=True, text=True,
                         check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"scripts/services/postgres.sh start failed: {out.stderr}")
    folder, url = out.stdout.split()
    try:
        yield url
    finally:
        subprocess.run(["bash", str(SERVICES / "postgres.sh"), "stop", folder], check=False)


@contextmanager
def postgres_database(cluster: str) -> Iterator[str]:
    name = f"genievm_workers_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(cluster, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.engine.make_url(cluster).set(database=name))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def moto_server(root: Path) -> Iterator[str]:
    """The suite's S3 server (GENIEVM_TEST_S3_ENDPOINT), or a private moto_server."""
    given = os.environ.get("GENIEVM_TEST_S3_ENDPOINT")
    if given:
        yield given
        return
    port = free_port()
    with (root / "moto.log").open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        def up() -> bool:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                return True
            except OSError:
                return False

        wait_for("moto_server", up, 60)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
