"""One restore of one backup, through the provider that made it (or another): plan, transfer, verify, commit."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from genievm_core.engine import JobControl, ProgressCallback, RestoreEngine, chunk_workers, results_or_cancel
from genievm_core.errors import ConfigError, VerifyError
from genievm_core.jobs.job import Job
from genievm_core.jobs.vm_files import stored_files
from genievm_core.logging import get_logger
from genievm_core.models.config import DiskConfig, RestoreConfig
from genievm_core.models.manifest import BackupManifest, DiskRecord
from genievm_core.models.vm import DiskInfo, VMDescription
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import Problem, RestoreRequest
from genievm_core.repository import ChunkIndex, Repository

__all__ = ["RestoreJob", "RestorePlan", "RestoreResult", "plan_restore", "run_restore", "write_restore"]

log = get_logger("genievm.restore")
PhaseCallback = Callable[[str], None]


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
        self.control.limits.change(config.bandwidth_limit_read, config.bandwidth_limit_write)
        self.restored: RestoreResult | None = None

    def execute(self) -> dict[str, Any]:
        self.restored = run_restore(
            self.host,
            self.config,
            self.repo,
            progress=self.on_progress,
            control=self.control,
            workers=self.workers,
            on_phase=self.enter_phase,
        )
        return asdict(self.restored)


@dataclass
class RestorePlan:
    """Phase 1 (plan): the backup, the disks to write and their checked indexes; nothing written yet."""

    manifest: BackupManifest
    disks: list[DiskRecord]
    indexes: dict[str, ChunkIndex]
    disk_configs: dict[str, DiskConfig]
    vm: VMDescription
    request: RestoreRequest


def run_restore(
    host: PluginHost,
    config: RestoreConfig,
    repo: Repository,
    *,
    progress: ProgressCallback | None = None,
    control: JobControl | None = None,
    workers: int | None = None,
    on_phase: PhaseCallback | None = None,
) -> RestoreResult:
    """Restore one backup under a shared lock, so nothing it reads is deleted meanwhile.

    Phases: plan (``plan_restore``), transfer, verify (unless ``verifyAfterRestore`` is off) and
    commit (the provider defines the VM and renames the disks into place), in ``write_restore``.
    No lock, after a warning, where the storage refuses writes or with ``repo.lock_reads`` off
    (``Repository.read_lock``). ``restorePath`` must be a folder, or absent.
    """
    phase = on_phase or (lambda _name: None)
    folder = config.restore_path
    if folder is not None and folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"invalid RestoreConfig: restorePath: {folder} is not a folder "
            "(--target names the folder the disks are restored into, made when absent)"
        )
    with repo.read_lock(f"restore of {config.vm_id}"):
        phase("plan")
        plan = plan_restore(config, repo)
        return write_restore(host, plan, config, repo, progress, control or _control(config), workers, phase)


def plan_restore(config: RestoreConfig, repo: Repository) -> RestorePlan:
    """Phase 1: find the backup, check the disk configs, read every index (a damaged one stops it here)."""
    manifest = repo.find_backup(config.vm_id, config.backup_id)
    disk_configs = {d.name: DiskConfig(name=d.name) for d in manifest.disks} | {c.name: c for c in config.disk_configs}
    unknown = set(disk_configs) - {d.name for d in manifest.disks}
    if unknown:
        raise ConfigError(
            f"invalid RestoreConfig: diskConfigs: backup {manifest.backup_id} has no disk {sorted(unknown)}"
        )
    disks = [d for d in manifest.disks if not disk_configs[d.name].skip]
    request = RestoreRequest(
        restore_path=config.restore_path,
        new_name=config.new_vm_name,
        force=config.force,
        disk_configs=disk_configs,
        options=config.provider_options,
        files=stored_files(manifest),
    )
    return RestorePlan(
        manifest=manifest,
        disks=disks,
        indexes={d.name: repo.disk_index(d) for d in disks},
        disk_configs=disk_configs,
        vm=_description(manifest),
        request=request,
    )


def write_restore(
    host: PluginHost,
    plan: RestorePlan,
    config: RestoreConfig,
    repo: Repository,
    progress: ProgressCallback | None,
    control: JobControl,
    workers: int | None,
    phase: PhaseCallback,
) -> RestoreResult:
    """Phases 2 to 4: write every disk (transfer), read them back (verify), let the provider commit."""
    manifest, disks, indexes = plan.manifest, plan.disks, plan.indexes
    provider = host.providers.get(config.provider)(config.provider_options)
    n_workers = chunk_workers(workers, os.cpu_count() or 2)
    try:
        log.info("restore.start", vm=manifest.vm.id, backup=manifest.backup_id)
        with (
            ThreadPoolExecutor(n_workers, thread_name_prefix="genievm-chunk") as pool,
            provider.open_restore(plan.vm, plan.request) as session,
        ):
            phase("transfer")
            engine = RestoreEngine(repo, pool, window=2 * n_workers, progress=progress, control=control)
            sinks = {
                d.name: session.open_sink(_info(d.name, d.size, d.format), plan.disk_configs[d.name]) for d in disks
            }
            with ThreadPoolExecutor(_disk_threads(len(disks)), thread_name_prefix="genievm-disk") as dp:
                futures = {
                    d.name: dp.submit(engine.restore_disk, d.name, indexes[d.name], sinks[d.name]) for d in disks
                }
                for _ in results_or_cancel(futures, control):
                    pass
            if config.verify_after_restore:
                phase("verify")
                problems: list[Problem] = []
                for d in disks:
                    problems += engine.compare(d.name, indexes[d.name], sinks[d.name])
                if problems:
                    raise VerifyError(
                        f"verification of the restore of {manifest.backup_id} found {len(problems)} problems: "
                        f"{problems[0].disk}: {problems[0].detail}"
                    )
            phase("commit")
            vm_id = session.commit()
        if config.power_on_after_restore:
            provider.power_on(vm_id)
    finally:
        provider.close()
    log.info("restore.done", vm=vm_id, backup=manifest.backup_id)
    return RestoreResult(manifest.backup_id, vm_id, [d.name for d in disks], config.verify_after_restore)


def _control(config: RestoreConfig) -> JobControl:
    """The control of a restore run without a job: never paused, limited as its config says."""
    control = JobControl()
    control.limits.change(config.bandwidth_limit_read, config.bandwidth_limit_write)
    return control


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
