"""Fault injection: kill a ``genievm`` process at a random (seeded) moment, then check what it left.

The building blocks, for the core's tests, the campaign script
(``scripts/fault_campaign.py``) and plugin authors who want the same checks
against their provider or storage:

- ``kill_after(cmd, env, delay)``: run a command, SIGKILL it ``delay``
  seconds after it started (unless it ended first); a ``Run``.
- ``repository_problems(host, url, passphrase)``: what is wrong with a
  repository after a crash: a manifest that cannot be read, a backup that does
  not pass ``verify --read-data`` (which also finds a manifest naming a missing
  chunk), and, with ``settled=True`` (after the next run), any lock or
  temporary file left behind.
- ``registry_problems(db)``: jobs of the job registry still pending, running or
  paused although no process runs them.
- ``ImageFaultBed``: a repository and two VMs of the built-in image provider,
  and the three jobs the campaign kills (``backup``, ``prune``, ``gc``), each
  with the work it needs prepared in-process before the kill. ``kill_once``
  runs one kill and its checks and returns the problems found.

The kill point is a time, drawn uniformly over the measured duration of the
same job run to its end, so the product carries no test-only hooks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from genievm_core.errors import GenieVMError
from genievm_core.jobs import DEFAULT_GRACE, JobRegistry, JobState, run_backup, run_verify
from genievm_core.models.config import BackupConfig
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.gc import prune_repository
from genievm_core.repository.lock import TOMBSTONE
from genievm_core.repository.repo import Damaged
from genievm_core.repository.storage import open_storage

__all__ = [
    "KINDS",
    "ImageFaultBed",
    "KillResult",
    "Run",
    "genievm_command",
    "kill_after",
    "registry_problems",
    "repository_problems",
    "temporary_files",
]

KINDS = ("backup", "prune", "gc")
UNFINISHED = (JobState.PENDING, JobState.RUNNING, JobState.PAUSED)


def genievm_command() -> list[str]:
    """The installed ``genievm`` console script beside this interpreter, or ``python -m genievm_core``."""
    exe = Path(sys.executable).with_name("genievm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "genievm_core"]


@dataclass
class Run:
    """One process run by ``kill_after``: whether the kill came before it ended, its exit code and output."""

    killed: bool
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def kill_after(cmd: Sequence[str], env: Mapping[str, str], delay: float | None, *, timeout: float = 600) -> Run:
    """Run ``cmd``; SIGKILL it ``delay`` seconds after it started, unless it ended first (``delay`` None: never)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = False
    try:
        proc.wait(timeout if delay is None else delay)
    except subprocess.TimeoutExpired:
        if delay is None:
            raise
        proc.send_signal(signal.SIGKILL)
        killed = True
    out, err = proc.communicate(timeout=timeout)
    return Run(killed, proc.returncode, out, err, time.monotonic() - started)


def temporary_files(root: Path, *, lock_age: float = 60.0) -> list[Path]:
    """Files of a filesystem repository that are puts left by a crash (``*.tmp``).

    Under ``locks/`` a lock may be being taken right now: only files older than
    ``lock_age`` seconds count there (garbage collection removes those).
    """
    if not root.exists():
        return []
    now = time.time()
    found = []
    for path in root.rglob("*.tmp"):
        try:
            if path.parent.name == "locks" and now - path.stat().st_mtime < lock_age:
                continue
        except FileNotFoundError:
            continue
        found.append(path)
    return sorted(found)


def open_repository(
    host: PluginHost, url: str, passphrase: str | None, options: Mapping[str, object] | None = None
) -> Repository:
    storage = open_storage(host, url, options)
    return Repository.open(storage, passphrase=(lambda: passphrase) if passphrase else None)


def repository_problems(
    host: PluginHost,
    url: str,
    passphrase: str | None,
    *,
    options: Mapping[str, object] | None = None,
    settled: bool = False,
    read_data: bool = True,
) -> list[str]:
    """What is wrong with the repository at ``url``: each problem one line (none: it is sound).

    Every manifest must load and every backup pass the verifiers (``read_data``:
    every chunk read and its id checked; otherwise the chunks' presence). With
    ``settled``, nothing may hold a lock and (on a filesystem) no temporary file may be left.
    """
    problems: list[str] = []
    try:
        repo = open_repository(host, url, passphrase, options)
        damaged: list[Damaged] = []
        manifests = repo.manifests(damaged=damaged)
        problems += [f"manifest {backup_id} cannot be read: {exc}" for backup_id, exc in damaged]
        for report in run_verify(host, repo, manifests, read_data=read_data):
            problems += [f"verify {report.verifier}: {report.backup_id}:{p.disk}: {p.detail}" for p in report.problems]
        if settled:
            left = [key for key in repo.storage.list("locks/") if not key.endswith(TOMBSTONE)]
            problems += [f"lock left behind: {key}" for key in left]
    except GenieVMError as exc:
        problems.append(f"repository cannot be checked: {type(exc).__name__}: {exc}")
    if settled and url.startswith(("/", "file://")):
        root = Path(url.removeprefix("file://"))
        problems += [f"temporary file left behind: {p.relative_to(root)}" for p in temporary_files(root)]
    return problems


def registry_problems(db: Path) -> list[str]:
    """Jobs recorded as unfinished although their process is gone (``sweep_stale`` runs first, as any command does)."""
    registry = JobRegistry(db)
    try:
        registry.sweep_stale()
        return [
            f"job {r.id} ({r.kind}) is still {r.state.value}" for r in registry.recent(states=UNFINISHED, limit=1000)
        ]
    finally:
        registry.close()


@dataclass
class KillResult:
    """One kill of a campaign: what was killed, when, and the problems the checks found."""

    number: int
    kind: str
    delay: float
    killed: bool  # False: the job ended before the kill came
    returncode: int
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        what = "killed" if self.killed else f"ended first (exit {self.returncode})"
        found = "ok" if not self.problems else f"{len(self.problems)} problems: " + "; ".join(self.problems[:3])
        return f"kill {self.number:4d} {self.kind:6s} at {self.delay:6.3f}s {what}: {found}"


class ImageFaultBed:
    """A repository and two VMs (``vm-a``, ``vm-b``) of image files under ``root``, for kill campaigns.

    ``url`` may name another repository (an ``s3://`` one, with ``storage_env``
    holding its options); by default it is the folder ``root/repo``.
    """

    MIB = 1 << 20

    def __init__(
        self,
        root: Path,
        *,
        seed: int = 0,
        disk_mib: int = 24,
        chunk_size: int = 64 << 10,
        passphrase: str | None = "fault campaign passphrase",
        url: str | None = None,
        storage_env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.disk_size = disk_mib * self.MIB
        self.chunk_size = chunk_size
        self.passphrase = passphrase
        self.url = url or str(root / "repo")
        self.db = root / "jobs.sqlite"
        self.host = PluginHost()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_")}
        self.env |= {"GENIEVM_JOB_DB": str(self.db), **(storage_env or {})}
        if passphrase:
            self.env["GENIEVM_PASSPHRASE"] = passphrase
        self.storage_options = json.loads(self.env.get("GENIEVM_STORAGE_OPTIONS", "{}"))
        self.disks = {vm: {"vda": root / f"{vm}-vda.img", "vdb": root / f"{vm}-vdb.img"} for vm in ("vm-a", "vm-b")}
        self.backed_up = "vm-a"  # the VM the backup kills back up
        self.durations: dict[str, float] = {}
        self.startup = 0.0  # seconds before a command does any work: kills are spread over the rest
        self.results: list[KillResult] = []
        self._repository: Repository | None = None

    # setting up

    def setup(self) -> None:
        """Create the images and the repository, and back up each VM once (in this process)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for disks in self.disks.values():
            for path in disks.values():
                with open(path, "wb") as f:
                    f.truncate(self.disk_size)
                    for _ in range(6):  # a few data runs, holes between them
                        at = self.rng.randrange(0, self.disk_size - self.MIB, 4096)
                        f.seek(at)
                        f.write(self.rng.randbytes(self.rng.randrange(self.MIB // 4, self.MIB)))
        init = [*genievm_command(), "repo", "init", self.url, "--chunk-size", str(self.chunk_size)]
        if not self.passphrase:
            init += ["--encryption", "none"]
        subprocess.run(init, env=self.env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
        for vm in self.disks:
            self.backup_in_process(vm)
        self.startup = kill_after([*genievm_command(), "plugins", "--json"], self.env, None).seconds

    def repository(self) -> Repository:
        """The repository, opened once (its key derivation and storage client are not cheap)."""
        if self._repository is None:
            self._repository = open_repository(self.host, self.url, self.passphrase, self.storage_options)
        return self._repository

    def change_disks(self, vm: str, writes: int = 4) -> None:
        """Overwrite a few random runs of ``vm``'s disks (new chunks for the next backup)."""
        for path in self.disks[vm].values():
            with open(path, "r+b") as f:
                for _ in range(writes):
                    f.seek(self.rng.randrange(0, self.disk_size - self.MIB, 512))
                    f.write(self.rng.randbytes(self.rng.randrange(4096, self.MIB // 2)))

    def disk_bytes(self, vm: str, disk: str) -> bytes:
        """The content of ``vm``'s disk ``disk`` now, raw."""
        return self.disks[vm][disk].read_bytes()

    def backup_in_process(self, vm: str) -> None:
        config = BackupConfig(
            vm_id=vm,
            backup_path=self.url,
            provider_options={"vms": {vm: {d: str(p) for d, p in self.disks[vm].items()}}},
        )
        run_backup(self.host, config, self.repository(), workers=2)

    # the jobs that are killed

    def command(self, kind: str) -> list[str]:
        base = genievm_command()
        if kind == "backup":
            disks = [a for d, p in self.disks["vm-a"].items() for a in ("--disk", f"{d}={p}")]
            return [*base, "backup", "--vm", "vm-a", "--repo", self.url, *disks, "--workers", "2", "--json"]
        if kind == "prune":
            return [*base, "prune", "--repo", self.url, "--vm", "vm-b", "--keep-last", "1", "--grace", "0", "--json"]
        if kind == "gc":
            return [*base, "gc", "--repo", self.url, "--grace", "0", "--json"]
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")

    def prepare(self, kind: str) -> None:
        """Give the job something to do: changed disks to back up, backups to prune, garbage to collect."""
        if kind == "backup":
            self.change_disks("vm-a")
        elif kind == "prune":
            self.change_disks("vm-b")
            self.backup_in_process("vm-b")  # vm-b has two backups or more: prune removes all but the newest
        elif kind == "gc":
            self.change_disks("vm-b")
            self.backup_in_process("vm-b")
            repo = self.repository()
            older = [m.backup_id for m in repo.manifests("vm-b")][:-1]
            for backup_id in older:  # pruned without collecting: what only they named is garbage
                repo.forget(backup_id)

    def measure(self, kind: str) -> float:
        """How long ``kind`` takes when nothing kills it (prepared as for a kill)."""
        self.prepare(kind)
        run = kill_after(self.command(kind), self.env, None)
        if run.returncode != 0:
            raise RuntimeError(f"{kind} failed before any kill: {run.stderr.strip()}")
        self.durations[kind] = run.seconds
        return run.seconds

    # one kill and its checks

    def kill_once(self, number: int, kind: str) -> KillResult:
        if kind not in self.durations:
            self.measure(kind)
        self.prepare(kind)
        delay = self.rng.uniform(min(0.8 * self.startup, self.durations[kind] / 2), self.durations[kind])
        run = kill_after(self.command(kind), self.env, delay)
        result = KillResult(number, kind, delay, run.killed, run.returncode)
        if not run.killed and run.returncode == 0:  # it ended first: the measure ran slower (a loaded machine)
            self.durations[kind] = min(self.durations[kind], run.seconds)  # the next kills come within this run
        self.after_kill(result)
        if not run.killed and run.returncode != 0:
            result.problems.append(f"{kind} failed on its own: {run.stderr.strip()}")
        # every committed backup is whole, and no manifest names a missing chunk
        result.problems += repository_problems(self.host, self.url, self.passphrase, options=self.storage_options)
        # the next run of the same job completes
        again = kill_after(self.command(kind), self.env, None)
        if again.returncode != 0:
            result.problems.append(f"the next {kind} failed (exit {again.returncode}): {again.stderr.strip()}")
        elif kind == "backup":
            result.problems += self.backup_matches_disks(self.backed_up)
        if kind == "backup":  # what a killed backup leaves is garbage collection's to remove (in time)
            try:
                prune_repository(self.repository(), grace=DEFAULT_GRACE, lock_wait=10)
            except GenieVMError as exc:
                result.problems.append(f"gc after the backup failed: {exc}")
        # nothing is left behind: locks, temporary files, unfinished jobs
        result.problems += repository_problems(
            self.host, self.url, self.passphrase, options=self.storage_options, settled=True, read_data=False
        )
        result.problems += registry_problems(self.db)
        result.problems += self.leftovers()
        self.results.append(result)
        return result

    def after_kill(self, result: KillResult) -> None:
        """Look at what the kill left on the hypervisor, before the next run cleans it up (nothing here)."""

    def leftovers(self) -> list[str]:
        """What the provider left on the hypervisor beyond what the repository needs (none for image files)."""
        return []

    def close(self) -> None:
        """Remove what ``setup`` made outside ``root`` (nothing for image files)."""

    def backup_matches_disks(self, vm: str) -> list[str]:
        """The newest backup of ``vm`` holds exactly the chunks of its disks as they are now."""
        repo = self.repository()
        latest = repo.latest(vm)
        if latest is None:
            return [f"no backup of {vm}"]
        problems = []
        for disk in latest.disks:
            index = repo.disk_index(disk)
            content = memoryview(self.disk_bytes(vm, disk.name))
            for i in range(index.count):
                data = bytes(content[i * index.chunk_size : i * index.chunk_size + index.chunk_length(i)])
                want = bytes(32) if not any(data) else repo.codec.chunk_id(data)
                if index[i] != want:
                    problems.append(f"backup {latest.backup_id} disk {disk.name} chunk {i} differs from the disk")
                    break
        return problems
