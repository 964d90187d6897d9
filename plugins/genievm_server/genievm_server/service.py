"""The server's work, behind the routes and the scheduler: everything goes through the library API
(``GenieVM``), the same job code the CLI runs, with secrets from the server's own settings."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from genievm_core.api import GenieVM, RestoreConfig
from genievm_core.errors import ConfigError
from genievm_core.jobs import Job, JobRecord, JobState
from genievm_core.jobs.prune import retention_policy
from genievm_core.logging import get_logger
from genievm_core.models.vm import VMRef
from genievm_core.repository import Repository
from genievm_core.repository.retention import RetentionPolicy
from genievm_server.dispatch import WorkerDispatch
from genievm_server.errors import UnknownNameError, VMBusyError
from genievm_server.metrics import Metrics
from genievm_server.notify import Notifier
from genievm_server.policy import Policy
from genievm_server.settings import ProviderSettings, ServerSettings
from genievm_server.store import Store

__all__ = ["Service"]

log = get_logger("genievm.server")
UNFINISHED = (JobState.PENDING, JobState.RUNNING, JobState.PAUSED)


class Service:
    """One per server process: its settings, database, library API object, metrics and notifier."""

    def __init__(self, settings: ServerSettings, *, disabled_plugins: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.store = Store(settings.database_url)
        self.genievm = GenieVM(
            disabled_plugins=disabled_plugins,
            job_db=settings.job_db,
            max_concurrent_jobs=settings.max_concurrent_jobs,
            on_warning=lambda w: log.warning("genievm.warning", warning=w),
        )
        self.queue_length: Callable[[], int] = lambda: 0  # the scheduler's, once it runs
        self.metrics = Metrics(lambda: self.queue_length())
        self.notifier = Notifier(settings.webhooks, settings.email)
        self._busy: dict[str, str] = {}  # VM name -> the id of its running backup job
        self.dispatch = WorkerDispatch(settings) if settings.broker else None  # backups to the workers
        if self.dispatch is not None:
            self.genievm.job_sources.append(self.dispatch)
        self._lock = threading.Lock()

    def close(self) -> None:
        for record in self.genievm.jobs(UNFINISHED, limit=1000):
            if record.pid == os.getpid():
                self.genievm.request(record.id, "cancel")
        self.genievm.close()
        self.store.close()
        if self.dispatch is not None:
            self.dispatch.close()

    # what the settings name

    def provider(self, name: str) -> ProviderSettings:
        try:
            return self.settings.providers[name]
        except KeyError:
            raise UnknownNameError(f"no provider {name} in the server's settings") from None

    def repository(self, name: str) -> Repository:
        """The repository ``name`` of the settings, opened with the server's passphrase for it."""
        try:
            settings = self.settings.repositories[name]
        except KeyError:
            raise UnknownNameError(f"no repository {name} in the server's settings") from None
        return self.genievm.open_repository(
            settings.url,
            passphrase=self.settings.passphrase(name),
            storage_options=settings.storage_options,
            lock_wait=self.settings.lock_wait,
        )

    def list_vms(self, provider: str) -> list[VMRef]:
        settings = self.provider(provider)
        return self.genievm.list_vms(settings.plugin, settings.options)

    # jobs

    def start_backup(
        self,
        provider: str,
        vm: str,
        repository: str,
        options: dict[str, Any] | None = None,
        on_end: Callable[[Job], None] | None = None,
    ) -> Job:
        """Start a backup of ``vm``; VMBusyError while another backup of it runs (here or in another process)."""
        source = self.provider(provider)
        repo_settings = self.settings.repositories.get(repository)
        policy = Policy.model_validate(
            {
                "name": "api",
                "provider": provider,
                "repository": repository,
                "schedule": {"cron": "0 0 * * *"},
                "backup": options or {},
            }
        )
        repo = self.repository(repository)
        config = policy.backup_config(
            vm, repo.url, source.plugin, source.options, repo_settings.storage_options if repo_settings else None
        )
        job = self.genievm.backup_job(config, repo)
        with self._lock:
            self._check_idle(vm)
            self._busy[vm] = job.id
        return self.start(job, on_end)

    def start_restore(
        self,
        repository: str,
        vm: str,
        backup: str,
        *,
        provider: str | None,
        restore_path: str | None,
        new_vm_name: str | None,
        force: bool,
        verify: bool,
    ) -> Job:
        """Restore a backup: to a folder of the server (no provider: the image provider) or into a provider."""
        target = self.provider(provider) if provider is not None else ProviderSettings(plugin="image")
        if provider is None and restore_path is None:
            raise ConfigError("invalid configuration: restore_path: give a folder under restore_root, or a provider")
        folder = str(self.settings.restore_folder(restore_path)) if restore_path is not None else None
        repo = self.repository(repository)
        config = RestoreConfig.model_validate(
            {
                "vmId": vm,
                "backupId": backup,
                "backupPath": repo.url,
                "provider": target.plugin,
                "providerOptions": target.options,
                "restorePath": folder,
                "newVmName": new_vm_name,
                "force": force,
                "verifyAfterRestore": verify,
            }
        )
        return self.start(self.genievm.restore_job(config, repo), None)

    def start_verify(self, repository: str, vm: str | None, backup: str, *, read_data: bool) -> Job:
        repo = self.repository(repository)
        manifests = [repo.find_backup(vm, backup)] if vm is not None or backup != "latest" else repo.manifests()
        return self.start(self.genievm.verify_job(repo, manifests, read_data=read_data), None)

    def start_policy_verify(self, policy: Policy, vms: list[str], on_end: Callable[[Job], None]) -> Job:
        """Verify the latest backup of each of ``vms`` that has one (a scheduled verify of ``policy``)."""
        repo = self.repository(policy.repository)
        latest = [m for m in (repo.latest(vm) for vm in vms) if m is not None]
        read_data = policy.verify is not None and policy.verify.read_data
        return self.start(self.genievm.verify_job(repo, latest, read_data=read_data), on_end)

    def start_policy_prune(self, policy: Policy, vms: list[str], on_end: Callable[[Job], None]) -> Job:
        """The keep rules of ``policy``'s backup options on ``vms``, then garbage collection."""
        repo = self.repository(policy.repository)
        rules = retention_policy(policy.backup_config("-", repo.url))
        return self.start(self.genievm.prune_job(repo, rules, vms, lock_wait=self.settings.lock_wait), on_end)

    def start_policy_copy(self, policy: Policy, vms: list[str], on_end: Callable[[Job], None]) -> Job:
        """Copy the backups of ``vms`` into ``policy``'s ``copy_to`` repository (those it lacks)."""
        assert policy.copy_to is not None
        source, target = self.repository(policy.repository), self.repository(policy.copy_to.repository)
        backups = [m for m in source.manifests() if m.vm.name in vms or m.vm.id in vms]
        return self.start(self.genievm.copy_job(source, target, backups), on_end)

    def start_prune(self, repository: str, rules: RetentionPolicy, vms: list[str] | None, *, dry_run: bool) -> Job:
        """The keep rules on the backups of ``vms`` (every VM: None), then garbage collection (no rule: that alone)."""
        repo = self.repository(repository)
        job = self.genievm.prune_job(repo, rules, vms, dry_run=dry_run, lock_wait=self.settings.lock_wait)
        return self.start(job, None)

    def last_gc(self, repository: str) -> JobRecord | None:
        """The newest prune job (garbage collection included) that succeeded on the repository and was no dry run,
        from the job registry: the server's, the scheduler's and the CLI's (``genievm prune``, ``genievm gc``) alike
        when they share it. The newest 1,000 succeeded jobs are looked at."""
        url = self.repository(repository).url
        for record in self.genievm.jobs((JobState.SUCCEEDED,), limit=1000):
            if record.kind == "prune" and record.repository == url and not (record.result or {}).get("dry_run"):
                return record
        return None

    def jobs(self, states: tuple[JobState, ...] = (), limit: int = 50) -> list[JobRecord]:
        return self.genievm.jobs(states, limit)

    def job(self, job_id: str) -> JobRecord:
        return self.genievm.job(job_id)

    def request(self, job_id: str, action: str) -> JobRecord:
        assert action in ("pause", "resume", "cancel")
        return self.genievm.request(job_id, action)  # type: ignore[arg-type]

    def vm_busy(self, vm: str) -> bool:
        with self._lock:
            try:
                self._check_idle(vm)
            except VMBusyError:
                return True
            return False

    def start(self, job: Job, on_end: Callable[[Job], None] | None = None) -> Job:
        """Start ``job`` in the library's job manager; when it ends: metrics, notifications, then ``on_end``."""

        def ended(job: Job) -> None:
            if not job.finished:
                return
            with self._lock:
                if job.vm is not None and self._busy.get(job.vm) == job.id:
                    del self._busy[job.vm]
            self.metrics.job_ended(job)
            self.notifier.job_ended(job)
            if on_end is not None:
                on_end(job)

        job.add_listener(ended)
        try:
            self.genievm.start(job)
        except BaseException:
            with self._lock:
                if job.vm is not None and self._busy.get(job.vm) == job.id:
                    del self._busy[job.vm]
            raise
        log.info("job.started", job_id=job.id, kind=job.kind, vm=job.vm)
        return job

    # internals

    def _check_idle(self, vm: str) -> None:
        if vm in self._busy:
            raise VMBusyError(f"VM {vm} has a backup running (job {self._busy[vm]}); one backup of a VM at a time")
        for record in self.genievm.jobs(UNFINISHED, limit=1000):  # another process's (a CLI backup)
            if record.kind == "backup" and record.vm == vm:
                raise VMBusyError(f"VM {vm} has a backup running (job {record.id}); one backup of a VM at a time")
