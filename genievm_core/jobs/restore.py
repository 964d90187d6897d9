"""One restore of one backup, through the provider that made it (or another)."""

from __future__ import annotations

import base64
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from genievm_core.engine import JobControl, ProgressCallback, RestoreEngine, results_or_cancel
from genievm_core.errors import ConfigError, VerifyError
from genievm_core.jobs.job import Job
from genievm_core.models.config import DiskConfig, RestoreConfig
from genievm_core.models.manifest import BackupManifest
from genievm_core.models.vm import DiskInfo, VMDescription
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import Problem, RestoreRequest
from genievm_core.repository import Repository

__all__ = ["RestoreJob", "RestoreResult", "run_restore"]

log = structlog.get_logger("genievm.restore")


@dataclass
class RestoreResult:
    backup_id: str
    vm_id: str
    disks: list[str]
    verified: bool


class RestoreJob(Job):
    kind = "restore"

    def __init__(
        self, host: PluginHost, config: RestoreConfig, repo: Repository, *, workers: int | None = None
    ) -> None:
        super().__init__(
            description=f"restore of {config.vm_id} {config.backup_id}", vm=config.vm_id, repository=repo.url
        )
        self.host = host
        self.config = config
        self.repo = repo
        self.workers = workers
        self.restored: RestoreResult | None = None

    def execute(self) -> dict[str, Any]:
        self.restored = run_restore(
            self.host, self.config, self.repo, progress=self.on_progress, control=self.control, workers=self.workers
        )
        return asdict(self.restored)


def run_restore(
    host: PluginHost,
    config: RestoreConfig,
    repo: Repository,
    *,
    progress: ProgressCallback | None = None,
    control: JobControl | None = None,
    workers: int | None = None,
) -> RestoreResult:
    """Restore one backup under a shared lock, so nothing it reads is deleted meanwhile.

    No lock, after a warning, where the storage refuses writes or with ``repo.lock_reads`` off
    (``Repository.read_lock``). ``restorePath`` must be a folder, or absent.
    """
    folder = config.restore_path
    if folder is not None and folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"invalid RestoreConfig: restorePath: {folder} is not a folder "
            "(--target names the folder the disks are restored into, made when absent)"
        )
    with repo.read_lock(f"restore of {config.vm_id}"):
        return _restore(host, config, repo, progress, control, workers)


def _restore(
    host: PluginHost,
    config: RestoreConfig,
    repo: Repository,
    progress: ProgressCallback | None,
    control: JobControl | None,
    workers: int | None,
) -> RestoreResult:
    manifest = repo.find_backup(config.vm_id, config.backup_id)
    disk_configs = {d.name: DiskConfig(name=d.name) for d in manifest.disks} | {c.name: c for c in config.disk_configs}
    unknown = set(disk_configs) - {d.name for d in manifest.disks}
    if unknown:
        raise ConfigError(
            f"invalid RestoreConfig: diskConfigs: backup {manifest.backup_id} has no disk {sorted(unknown)}"
        )
    disks = [d for d in manifest.disks if not disk_configs[d.name].skip]
    indexes = {d.name: repo.disk_index(d) for d in disks}  # damaged indexes are found before anything is written
    vm = _description(manifest)
    request = RestoreRequest(
        restore_path=config.restore_path,
        new_name=config.new_vm_name,
        force=config.force,
        disk_configs=disk_configs,
        options=config.provider_options,
    )
    provider = host.providers.get(config.provider)(config.provider_options)
    n_workers = workers or os.cpu_count() or 2
    problems: list[Problem] = []
    control = control or JobControl()
    try:
        log.info("restore.start", vm=manifest.vm.id, backup=manifest.backup_id)
        with (
            ThreadPoolExecutor(n_workers, thread_name_prefix="genievm-chunk") as pool,
            provider.open_restore(vm, request) as session,
        ):
            engine = RestoreEngine(repo, pool, window=2 * n_workers, progress=progress, control=control)
            sinks = {d.name: session.open_sink(_info(d.name, d.size, d.format), disk_configs[d.name]) for d in disks}
            with ThreadPoolExecutor(_disk_threads(len(disks)), thread_name_prefix="genievm-disk") as dp:
                futures = {
                    d.name: dp.submit(engine.restore_disk, d.name, indexes[d.name], sinks[d.name]) for d in disks
                }
                for _ in results_or_cancel(futures, control):
                    pass
            if config.verify_after_restore:
                for d in disks:
                    problems += engine.compare(d.name, indexes[d.name], sinks[d.name])
                if problems:
                    raise VerifyError(
                        f"verification of the restore of {manifest.backup_id} found {len(problems)} problems: "
                        f"{problems[0].disk}: {problems[0].detail}"
                    )
            vm_id = session.commit()
        if config.power_on_after_restore:
            provider.power_on(vm_id)
    finally:
        provider.close()
    log.info("restore.done", vm=vm_id, backup=manifest.backup_id)
    return RestoreResult(manifest.backup_id, vm_id, [d.name for d in disks], config.verify_after_restore)


def _disk_threads(count: int) -> int:
    return max(1, min(count, 4))


def _info(name: str, size: int, fmt: str) -> DiskInfo:
    return DiskInfo(name=name, size=size, storage_kind="other", format=fmt)


def _description(manifest: BackupManifest) -> VMDescription:
    return VMDescription(
        id=manifest.vm.id,
        name=manifest.vm.name,
        disks=tuple(_info(d.name, d.size, d.format) for d in manifest.disks),
        config=base64.b64decode(manifest.vm.config) if manifest.vm.config else b"",
        config_format=manifest.vm.config_format or "",
        summary=dict(manifest.vm.summary),
    )
