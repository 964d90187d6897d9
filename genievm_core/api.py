"""The library API: open repositories and run jobs from Python, as the CLI does.

The CLI, the server and the workers all go through one ``GenieVM`` object: it
owns the plugin host, the job registry and the jobs it starts; it opens
storage (plugin, options, retries) and repositories (passphrase from the
argument, a file, ``GENIEVM_PASSPHRASE`` or a prompt; the config checked
against what this client remembers); and it builds and runs the backup,
restore, verify and prune jobs the commands run::

    from genievm_core.api import BackupConfig, GenieVM

    with GenieVM() as genievm:
        repo = genievm.init_repository("/srv/backups", passphrase="a long passphrase")
        config = BackupConfig(vm_id="web01", backup_path="/srv/backups",
                              provider_options={"vms": {"web01": {"vda": "/images/web01.img"}}})
        running = genievm.start(genievm.backup_job(config, repo))
        running.wait()
        print(running.job.state, running.job.result["backup_id"])

A job run with ``run`` (in the calling thread) or ``start`` (in the
background) is recorded in the job registry, so ``genievm jobs`` in another
process sees, pauses and cancels it (and changes its bandwidth limits), and ``request`` and
``limit`` do the same from here.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from genievm_core import key_ahead
from genievm_core.choices import PASSPHRASE_ENV, REPO_ENV
from genievm_core.engine import DiskProgress
from genievm_core.errors import ConfigError, GenieVMError, JobNotFoundError, PassphraseRequiredError
from genievm_core.jobs import (
    DEFAULT_GRACE,
    DEFAULT_MAX_CONCURRENT_JOBS,
    BackupJob,
    Job,
    JobManager,
    JobRecord,
    JobRegistry,
    JobState,
    PruneJob,
    RestoreJob,
    VerifyJob,
    default_job_db,
)
from genievm_core.jobs.copy import CopyJob
from genievm_core.jobs.elsewhere import JobSource, job_sources
from genievm_core.models.config import BackupConfig, RestoreConfig
from genievm_core.models.manifest import BackupManifest
from genievm_core.models.user_files import read_user_file, text_of
from genievm_core.models.vm import VMRef
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import StorageTarget
from genievm_core.repository import DEFAULT_CHUNK_SIZE, Damaged, Repository
from genievm_core.repository.keys import Keys, keys_of_file
from genievm_core.repository.known import KnownRepositories
from genievm_core.repository.lock import STALE_AFTER, LockPolicy, remove_locks
from genievm_core.repository.retention import RetentionPolicy
from genievm_core.repository.retry import DEFAULT_ATTEMPTS, with_retries
from genievm_core.repository.storage import open_storage

__all__ = [
    "PASSPHRASE_ENV",
    "REPO_ENV",
    "STORAGE_OPTIONS_ENV",
    "BackupConfig",
    "GenieVM",
    "RestoreConfig",
    "RetentionPolicy",
    "RunningJob",
    "passphrase_source",
]

PASSPHRASE_COMMAND_TIMEOUT = 120.0  # seconds a passphrase command may take (a secret manager may prompt)
STORAGE_OPTIONS_ENV = "GENIEVM_STORAGE_OPTIONS"
MAX_PASSPHRASE = 4 << 10  # bytes of a passphrase file
Progress = Callable[[DiskProgress], None]


@dataclass
class RunningJob:
    """A job started in the background: ``wait`` for it, read ``job.state`` and ``job.progress``."""

    job: Job
    future: Future[None]

    def wait(self, timeout: float | None = None) -> Job:
        """The job once it has ended (whatever its state); raises TimeoutError after ``timeout`` seconds."""
        self.future.result(timeout)
        return self.job

    def cancel(self) -> None:
        self.job.cancel()

    def limit(self, read: float | None = None, write: float | None = None) -> None:
        """Change the job's bandwidth limits at once, in MB/s (None: as it is; 0: no limit)."""
        self.job.limit(read, write)


@dataclass
class GenieVM:
    """One client of GenieVM: its plugins, its job registry, its jobs. Close it (or use ``with``) when done."""

    disabled_plugins: Sequence[str] = ()
    storage_options: Mapping[str, Any] = field(default_factory=dict)  # above any config's storageOptions
    job_db: Path | None = None  # None: default_job_db()
    storage_attempts: int = DEFAULT_ATTEMPTS
    on_warning: Callable[[str], None] | None = None  # told each warning once (unencrypted repository, ...)
    max_concurrent_jobs: int = DEFAULT_MAX_CONCURRENT_JOBS
    lock_stale_after: float = STALE_AFTER  # seconds without a refresh after which another host's lock is stale
    passphrase_command: str | None = None  # run (no shell) for the passphrase, e.g. "pass show backups/genievm"
    key_file: Path | None = None  # a key file (``genievm repo key export``): opens repositories without a passphrase
    _host: PluginHost | None = None
    _registry: JobRegistry | None = None
    _manager: JobManager | None = None
    _warned: set[str] = field(default_factory=set)
    _job_sources: list[JobSource] | None = None

    # plugins, registry, lifecycle

    @property
    def host(self) -> PluginHost:
        if self._host is None:
            self._host = PluginHost(disabled=self.disabled_plugins)
        return self._host

    @property
    def registry(self) -> JobRegistry:
        if self._registry is None:
            self._registry = JobRegistry(self.job_db)
        return self._registry

    def close(self) -> None:
        """Wait for the jobs ``start`` started, then close the registry."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def __enter__(self) -> GenieVM:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # storage and repositories

    def open_storage(self, url: str | None, config_options: Mapping[str, Any] | None = None) -> StorageTarget:
        """The storage target for ``url`` (or ``GENIEVM_BACKUP_PATH``); its options layered lowest first:
        ``GENIEVM_STORAGE_OPTIONS`` (a JSON object), a job config's ``storageOptions``, then ``storage_options``."""
        options = {**_storage_options_env(), **(config_options or {}), **self.storage_options}
        return open_storage(self.host, _require_repo(url), options)

    def init_repository(
        self,
        url: str | None,
        *,
        passphrase: str | None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Repository:
        """Create a repository at ``url`` (or ``GENIEVM_BACKUP_PATH``), encrypted unless ``passphrase`` is None,
        and remember it as this client's."""
        repo = Repository.init(self.open_storage(url, storage_options), passphrase=passphrase, chunk_size=chunk_size)
        self.known_repositories.remember(repo.url, repo.config)
        return repo

    def open_repository(
        self,
        url: str | None = None,
        passphrase_file: Path | None = None,
        *,
        passphrase: str | None = None,
        compression_level: int = 3,
        storage_options: Mapping[str, Any] | None = None,
        no_lock: bool = False,
        lock_wait: float = 10.0,
    ) -> Repository:
        """Open ``url`` (or ``GENIEVM_BACKUP_PATH``), its storage wrapped in retries.

        The passphrase, when the repository needs one: ``passphrase``, else the file,
        else ``GENIEVM_PASSPHRASE``, else a prompt on a terminal. Giving one makes a
        config that claims to be unencrypted a refusal (it may have been replaced).
        ``no_lock`` (``--no-lock``): its reads (verify, restore) take no lock, with a warning.
        ``lock_wait``: seconds its jobs wait for a conflicting lock to go.
        """
        self._derive_key_ahead(url, passphrase, passphrase_file)
        storage = with_retries(self.open_storage(url, storage_options), self.storage_attempts)
        given = (
            passphrase is not None
            or passphrase_file is not None
            or self.passphrase_command is not None
            or self.key_file is not None
            or bool(os.environ.get(PASSPHRASE_ENV))
        )
        repo = Repository.open(
            storage,
            passphrase=self._source(passphrase, passphrase_file),
            compression_level=compression_level,
            expect_encrypted=given,
            known=self.known_repositories,
            key_file=self._key_file() if passphrase is None and passphrase_file is None else None,
        )
        repo.lock_reads = not no_lock
        repo.locking = LockPolicy(wait=lock_wait, stale_after=self.lock_stale_after)
        for warning in repo.warnings:
            self._warn(warning)
        repo.on_warning = self._warn
        return repo

    def upgrade_repository(
        self, repository: Repository, passphrase_file: Path | None = None, *, passphrase: str | None = None,
        lock_wait: float = 10.0,
    ) -> tuple[bool, int]:  # fmt: skip
        """Bring an open repository's config to the current format under the exclusive lock, and enter the
        backups made before its backup log existed: whether the config changed, and how many were entered."""
        with repository.lock("exclusive", "upgrade", timeout=lock_wait):
            changed = repository.upgrade(self._source(passphrase, passphrase_file))
            if changed:  # what this client remembers follows the new format
                self.known_repositories.remember(repository.url, repository.config)
            return changed, repository.log_unlisted()

    def unlock(
        self, repository: Repository, *, force: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Remove the repository's stale locks (every lock with ``force``): the removed ones and the kept ones."""
        return remove_locks(repository.storage, stale_after=self.lock_stale_after, force=force)

    @property
    def known_repositories(self) -> KnownRepositories:
        """``known-repositories.json`` beside the job registry: what this client saw of each repository."""
        return KnownRepositories((self.job_db or default_job_db()).parent / "known-repositories.json")

    def backups(
        self, repository: Repository, vm: str | None = None, *, damaged: list[Damaged] | None = None
    ) -> list[BackupManifest]:
        """The backups of a repository (of one VM), oldest first; unreadable ones into ``damaged`` when given."""
        return repository.manifests(vm, damaged=damaged)

    def list_vms(self, provider: str, options: Mapping[str, Any]) -> list[VMRef]:
        """The VMs a provider sees with these providerOptions (it connects, lists and closes)."""
        connection = self.host.providers.get(provider)(dict(options))
        try:
            return connection.list_vms()
        finally:
            connection.close()

    # jobs

    def backup_job(self, config: BackupConfig, repository: Repository | None = None, *, workers: int | None = None
                   ) -> BackupJob:  # fmt: skip
        """A backup of ``config.vm_id``, into ``repository`` or the one ``config.backup_path`` names."""
        repo = repository or self.open_repository(
            config.backup_path, compression_level=config.compression_level, storage_options=config.storage_options
        )
        return BackupJob(self.host, config, repo, workers=workers)

    def restore_job(self, config: RestoreConfig, repository: Repository | None = None, *, workers: int | None = None
                    ) -> RestoreJob:  # fmt: skip
        repo = repository or self.open_repository(config.backup_path, storage_options=config.storage_options)
        return RestoreJob(self.host, config, repo, workers=workers)

    def verify_job(
        self,
        repository: Repository,
        manifests: Iterable[BackupManifest],
        *,
        read_data: bool = False,
        whole_repository: bool = False,
        extra: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> VerifyJob:
        """The verifiers over ``manifests``; ``whole_repository``: also its unknown objects and backup log;
        ``extra``: more verifiers by name, with their options (``{"boot": {"timeout": 60}}``)."""
        return VerifyJob(
            self.host, repository, list(manifests), read_data=read_data, whole_repository=whole_repository,
            extra=extra,
        )

    def prune_job(
        self,
        repository: Repository,
        policy: RetentionPolicy,
        vms: Sequence[str] | None = None,
        *,
        grace: timedelta = DEFAULT_GRACE,
        dry_run: bool = False,
        lock_wait: float = 3600.0,
    ) -> PruneJob:
        """Retention by ``policy``, then garbage collection (an empty policy: garbage collection alone)."""
        return PruneJob(repository, policy, vms, grace=grace, dry_run=dry_run, lock_wait=lock_wait)

    def copy_job(self, source: Repository, target: Repository, backups: list[BackupManifest]) -> CopyJob:
        """A copy of ``backups`` of ``source`` into ``target``, only the chunks it lacks sent (``repo copy``)."""
        return CopyJob(source, target, backups)

    def run(self, job: Job, progress: Progress | None = None) -> Job:
        """Run ``job`` in this thread, recorded in the job registry; raise its error when it fails."""
        job.extra_progress = progress
        with JobManager(self.registry) as manager:
            return manager.run(job)

    def start(self, job: Job, progress: Progress | None = None) -> RunningJob:
        """Run ``job`` in the background (at most ``max_concurrent_jobs`` at once; the rest wait, pending)."""
        if self._manager is None:
            self._manager = JobManager(self.registry, max_concurrent=self.max_concurrent_jobs).start()
        job.extra_progress = progress
        return RunningJob(job, self._manager.submit(job))

    def jobs(self, states: Iterable[JobState] = (), limit: int = 50) -> list[JobRecord]:
        """Jobs of this registry and of the job sources (the workers'), newest first; jobs whose process died
        are marked failed first."""
        self.registry.sweep_stale()
        wanted = tuple(states)
        records = {r.id: r for r in self.registry.recent(states=wanted, limit=limit)}
        for source in self.job_sources:
            records |= {r.id: r for r in source.recent(wanted, limit) if r.id not in records}
        return sorted(records.values(), key=lambda r: r.created_at, reverse=True)[:limit]

    def job(self, job_id: str) -> JobRecord:
        """One job by id or unique prefix, from any process of this registry, or from a job source."""
        self.registry.sweep_stale()
        try:
            return self.registry.get(job_id)
        except JobNotFoundError:
            for source in self.job_sources:
                if (record := source.get(job_id)) is not None:
                    return record
            raise

    @property
    def job_sources(self) -> list[JobSource]:
        """Where jobs run elsewhere are shown from (``genievm_core.jobs.elsewhere``), found once."""
        if self._job_sources is None:
            self._job_sources = job_sources(self.job_db or default_job_db(), self.disabled_plugins)
        return self._job_sources

    def request(self, job_id: str, action: Literal["pause", "resume", "cancel"]) -> JobRecord:
        """Ask the process that runs a job to pause, resume or cancel it (it acts within a second)."""
        return self.registry.request(job_id, action)

    def limit(self, job_id: str, *, read: float | None = None, write: float | None = None) -> JobRecord:
        """Ask the process that runs a job to change its bandwidth limits, in MB/s (None: as it is; 0: no limit)."""
        return self.registry.request_limits(job_id, read=read, write=write)

    def passphrase_source(self, passphrase_file: Path | None, *, confirm: bool = False) -> Callable[[], str]:
        """``passphrase_source`` with this client's ``passphrase_command``."""
        return passphrase_source(passphrase_file, confirm=confirm, command=self.passphrase_command)

    def _key_file(self) -> tuple[str, Keys] | None:
        if self.key_file is None:
            return None
        data = read_user_file(self.key_file, what="key file", limit=MAX_PASSPHRASE)
        try:
            return keys_of_file(data)
        except ValueError as exc:
            raise ConfigError(f"invalid configuration: --key-file: {self.key_file} is not a key file ({exc})") from None

    def _derive_key_ahead(self, url: str | None, passphrase: str | None, passphrase_file: Path | None) -> None:
        """Start scrypt for a repository on this host's file system while its plugins load (about 0.09 s of
        every command that opens one, on another CPU; ``genievm_core.key_ahead``): only when the passphrase is
        at hand without side effects (given, in a regular file, or in GENIEVM_PASSPHRASE; not a pipe, which
        is read once, nor a command). ``Repository.open`` takes the key only if it derives the very same one."""
        if passphrase is None and self.key_file:
            return
        try:
            if passphrase is not None:
                secret: str | None = passphrase
            elif passphrase_file is not None:
                secret = _passphrase_of_file(passphrase_file) if passphrase_file.is_file() else None
            else:
                secret = None if self.passphrase_command else os.environ.get(PASSPHRASE_ENV)
        except (GenieVMError, OSError):
            return  # the open says what is wrong
        if secret:
            key_ahead.start_for_local(url or os.environ.get(REPO_ENV) or "", secret)

    def _source(self, passphrase: str | None, passphrase_file: Path | None) -> Callable[[], str]:
        return (lambda: passphrase) if passphrase is not None else self.passphrase_source(passphrase_file)

    def _warn(self, warning: str) -> None:
        if warning not in self._warned:
            self._warned.add(warning)
            if self.on_warning is not None:
                self.on_warning(warning)


def _passphrase_of_file(path: Path) -> str:
    data = read_user_file(path, what="passphrase file", limit=MAX_PASSPHRASE)
    return text_of(data, path, what="passphrase file").rstrip("\n")


def passphrase_source(
    passphrase_file: Path | None, *, confirm: bool = False, command: str | None = None
) -> Callable[[], str]:
    """A callable that returns the passphrase: from a command, a file, the environment, or a prompt.

    A passphrase file is a regular file or a pipe of at most 4 KiB; a passphrase command (split as a
    shell would, but run without one) prints at most 4 KiB, its first line the passphrase. An empty
    passphrase from any source is the same case as none at all.
    """
    if command is not None and passphrase_file is not None:
        raise ConfigError("invalid configuration: --passphrase-command: give it or --passphrase-file, not both")

    def get() -> str:
        if command is not None:
            passphrase = _run_passphrase_command(command)
        elif passphrase_file is not None:
            passphrase = _passphrase_of_file(passphrase_file)
        elif os.environ.get(PASSPHRASE_ENV):
            passphrase = os.environ[PASSPHRASE_ENV]
        elif not sys.stdin.isatty():
            passphrase = ""
        else:
            passphrase = getpass.getpass("Repository passphrase: ")
            if passphrase and confirm and getpass.getpass("Repeat the passphrase: ") != passphrase:
                raise ConfigError("invalid configuration: passphrase: the two entries differ")
        if not passphrase:  # none, or an empty one from any source: the same case, the same line
            raise PassphraseRequiredError(
                f"a passphrase is needed: set {PASSPHRASE_ENV}, give a non-empty --passphrase-file, "
                "or run on a terminal"
            )
        return passphrase

    return get


def _run_passphrase_command(command: str) -> str:
    """The first line the command prints; its failure is one line naming the command (never its output)."""
    what = "invalid configuration: --passphrase-command"
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"{what}: cannot split {command!r}: {exc}") from None
    if not argv:
        raise ConfigError(f"{what}: empty")
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors)  # stdin: ours, for a prompt
        except OSError as exc:
            raise ConfigError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
        assert proc.stdout is not None
        with proc:
            out = proc.stdout.read(MAX_PASSPHRASE + 1)
            if len(out) > MAX_PASSPHRASE:
                proc.kill()
                raise ConfigError(f"{what}: {argv[0]} printed more than 4 KiB")
            try:
                code = proc.wait(PASSPHRASE_COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise ConfigError(f"{what}: {argv[0]} took more than {PASSPHRASE_COMMAND_TIMEOUT:.0f} s") from None
        if code != 0:
            errors.seek(0)
            said = errors.read(MAX_PASSPHRASE).decode(errors="replace").strip().splitlines()
            because = f": {said[-1][:200]}" if said else ""
            raise ConfigError(f"{what}: {argv[0]} exited {code}{because}")
    try:
        text = out.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {argv[0]} printed something that is not UTF-8 text") from None
    return text.split("\n", 1)[0].rstrip("\r")


def _storage_options_env() -> dict[str, Any]:
    text = os.environ.get(STORAGE_OPTIONS_ENV)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(f"invalid configuration: {STORAGE_OPTIONS_ENV}: not a JSON object")
    return value


def _require_repo(url: str | None) -> str:
    url = url or os.environ.get(REPO_ENV)
    if not url:
        raise ConfigError(f"invalid configuration: backupPath: give --repo or set {REPO_ENV}")
    return url
