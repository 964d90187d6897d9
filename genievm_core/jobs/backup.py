"""One backup of one VM, from provider to committed manifest, in three phases.

1. *plan*: describe the VM and check its names, take a shared repository lock,
   pick the parent and read its indexes (``plan_backup`` → ``BackupPlan``);
2. *transfer*: open the provider's point in time, choose each disk's changed
   extents (CBT, or hash-compare with the reason), copy every disk through the
   engine, leave the point in time (the provider removes its snapshot)
   (``transfer_backup`` → a ``DiskTransfer`` per disk);
3. *commit*: the indexes, and last the manifest (``commit_backup``).

Until the manifest is written nothing of this backup is visible; a failure
leaves at most unreferenced chunks, which the next run of the same backup
re-uses (they are found stored) and garbage collection removes after its grace.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from genievm_core.engine import (
    BackupEngine,
    DiskPlan,
    JobControl,
    ProgressCallback,
    chunk_workers,
    default_workers,
    results_or_cancel,
)
from genievm_core.engine.cbt_choice import changed_since
from genievm_core.errors import CBTError, ConfigError, CorruptionError, GenieVMError, JobInterruptedError, ProviderError
from genievm_core.jobs.job import Job
from genievm_core.jobs.prune import prune_vms, retention_policy
from genievm_core.jobs.vm_files import session_files
from genievm_core.logging import get_logger
from genievm_core.models.config import BackupConfig
from genievm_core.models.manifest import (
    BackupManifest,
    BackupStats,
    CBTRecord,
    DiskRecord,
    VMRecord,
    is_safe_name,
)
from genievm_core.models.vm import DiskInfo, VMDescription
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import BackupRequest, CBTSource, ChangedExtents, DiskSource, Provider
from genievm_core.repository import ChunkIndex, Damaged, Repository, new_backup_id

__all__ = [
    "BackupJob",
    "BackupPlan",
    "DiskTransfer",
    "commit_backup",
    "describe_for_backup",
    "plan_backup",
    "run_backup",
    "transfer_backup",
]

log = get_logger("genievm.backup")
PhaseCallback = Callable[[str], None]


class BackupJob(Job):
    """One backup of one VM; with ``pruneAfterBackup``, the VM's retention rules are applied after it."""

    kind = "backup"

    def __init__(self, host: PluginHost, config: BackupConfig, repo: Repository, *, workers: int | None = None) -> None:
        super().__init__(description=f"backup of {config.vm_id}", vm=config.vm_id, repository=repo.url)
        self.host = host
        self.config = config
        self.repo = repo
        self.workers = workers
        self.control.limits.change(config.bandwidth_limit_read, config.bandwidth_limit_write)
        self.manifest: BackupManifest | None = None

    def execute(self) -> dict[str, Any]:
        self.manifest = run_backup(
            self.host,
            self.config,
            self.repo,
            progress=self.on_progress,
            control=self.control,
            workers=self.workers,
            on_phase=self.enter_phase,
        )
        result: dict[str, Any] = {
            "backup_id": self.manifest.backup_id,
            "kind": self.manifest.kind,
            "stats": self.manifest.stats.model_dump(),
        }
        if self.config.prune_after_backup:
            policy = retention_policy(self.config)
            try:
                report = prune_vms(self.repo, policy, [self.manifest.vm.id], checkpoint=self.control.checkpoint)
            except JobInterruptedError:
                raise
            except GenieVMError as exc:  # the backup is committed: it succeeded whatever becomes of the prune
                log.warning("backup.prune_failed", vm=self.manifest.vm.id, error=str(exc))
                result["prune_error"] = str(exc)
            else:
                result["prune"] = report.to_json()
        return result


@dataclass
class BackupPlan:
    """Phase 1 (plan): what the backup copies, decided under the shared lock before any data moves."""

    backup_id: str
    started_at: datetime
    vm: VMDescription
    vm_record: VMRecord
    disks: list[DiskInfo]
    parent: BackupManifest | None
    parent_indexes: dict[str, ChunkIndex]  # the parent's usable indexes, by disk
    request: BackupRequest

    @property
    def parent_disks(self) -> dict[str, DiskRecord]:
        return {d.name: d for d in self.parent.disks} if self.parent else {}


@dataclass
class DiskTransfer:
    """Phase 2 (transfer): one disk copied into chunks; its index, counts and CBT record (with the next token)."""

    index: ChunkIndex
    stats: BackupStats
    cbt: CBTRecord


def run_backup(
    host: PluginHost,
    config: BackupConfig,
    repo: Repository,
    *,
    progress: ProgressCallback | None = None,
    control: JobControl | None = None,
    workers: int | None = None,
    on_phase: PhaseCallback | None = None,
) -> BackupManifest:
    """Plan, transfer and commit one backup; ``on_phase`` is told each phase as it begins."""
    phase = on_phase or (lambda _name: None)
    provider = host.providers.get(config.provider)(config.provider_options)
    try:
        phase("plan")
        vm, disks = describe_for_backup(provider, config)
        with repo.lock("shared", f"backup of {vm.id}", checkpoint=control.checkpoint if control else None):
            plan = plan_backup(repo, config, vm, disks)
            phase("transfer")
            sources = host.cbt_sources.by_priority()
            transfers = transfer_backup(
                plan, provider, repo, config, sources, progress, control or _control(config), workers
            )
            phase("commit")
            manifest = commit_backup(plan, transfers, repo)
        log.info(
            "backup.done",
            vm=vm.id,
            backup=manifest.backup_id,
            kind=manifest.kind,
            new=manifest.stats.bytes_new,
            stored=manifest.stats.bytes_stored,
        )
        return manifest
    finally:
        provider.close()


def describe_for_backup(provider: Provider, config: BackupConfig) -> tuple[VMDescription, list[DiskInfo]]:
    """The VM and the disks to back up; names and ``excludedDisks`` are checked before anything is locked."""
    vm = provider.describe_vm(config.vm_id)
    _vm_record(vm, config.provider)
    unknown = set(config.excluded_disks) - {d.name for d in vm.disks}
    if unknown:
        raise ConfigError(f"invalid BackupConfig: excludedDisks: VM {vm.id} has no disk {sorted(unknown)}")
    return vm, [d for d in vm.disks if d.name not in config.excluded_disks]


def plan_backup(repo: Repository, config: BackupConfig, vm: VMDescription, disks: list[DiskInfo]) -> BackupPlan:
    """Phase 1: the backup's id, its parent and the parent's indexes. Call it holding the shared lock."""
    parent = _parent(repo, vm.id) if config.incremental else None
    parent_disks = {d.name: d for d in parent.disks} if parent else {}
    request = BackupRequest(
        disks=tuple(d.name for d in disks),
        tokens={n: d.cbt.token for n, d in parent_disks.items()},
        enable_cbt=config.enable_cbt,
        quiesce=config.quiesce,
        workdir=config.backup_dir,
        chain_id=repo.config.repository_id,
    )
    return BackupPlan(
        backup_id=new_backup_id(),
        started_at=datetime.now(UTC),
        vm=vm,
        vm_record=_vm_record(vm, config.provider),
        disks=disks,
        parent=parent,
        parent_indexes=_parent_indexes(repo, parent_disks),
        request=request,
    )


def transfer_backup(
    plan: BackupPlan,
    provider: Provider,
    repo: Repository,
    config: BackupConfig,
    cbt_sources: list[CBTSource],
    progress: ProgressCallback | None,
    control: JobControl,
    workers: int | None,
) -> dict[str, DiskTransfer]:
    """Phase 2: open the provider's point in time, choose each disk's changed extents, copy every disk.

    ``cbt_sources`` are the registered CBT sources, highest priority first (``host.cbt_sources.by_priority()``);
    the core asks the first that supports each disk (``genievm_core.engine.cbt_choice``).

    The provider's snapshot or backup job exists only inside this phase; nothing is
    visible in the repository yet (chunks no manifest names, until the commit).
    """
    parent = plan.parent
    log.info("backup.start", vm=plan.vm.id, backup=plan.backup_id, parent=parent.backup_id if parent else None)
    n_workers = chunk_workers(workers, default_workers())
    known: set[bytes] = set()
    for index in plan.parent_indexes.values():
        known |= index.stored_ids()
    try:
        with ThreadPoolExecutor(n_workers, thread_name_prefix="genievm-chunk") as pool:
            engine = BackupEngine(repo, pool, known_ids=known, window=n_workers + 2, progress=progress, control=control)
            with provider.open_backup(plan.vm, plan.request) as session:
                sources = session.sources()
                plans = {
                    d.name: _plan(d, sources[d.name], plan.parent_disks, plan.parent_indexes, config, cbt_sources)
                    for d in plan.disks
                }
                with ThreadPoolExecutor(config.max_concurrent_disks, thread_name_prefix="genievm-disk") as dp:
                    futures = {
                        d.name: dp.submit(engine.backup_disk, sources[d.name], plans[d.name]) for d in plan.disks
                    }
                    results = dict(results_or_cancel(futures, control))
                durable = pool.submit(repo.flush_chunks)  # the last chunks' fsyncs, while the provider ends its job
                tokens = {d.name: sources[d.name].next_token() for d in plan.disks}
                files = session_files(session, config.provider, plan.vm.id)  # at the same point in time
                plan.vm_record = plan.vm_record.model_copy(update={"files": files})
            durable.result()
    except BaseException:
        with contextlib.suppress(GenieVMError):  # keep what was stored for a resume; the first error is the one
            repo.flush_chunks()
        raise
    return {
        name: DiskTransfer(index, stats, plans[name].cbt.model_copy(update={"token": tokens[name]}))
        for name, (index, stats) in results.items()
    }


def commit_backup(plan: BackupPlan, transfers: dict[str, DiskTransfer], repo: Repository) -> BackupManifest:
    """Phase 3: the indexes, then the manifest (the backup exists once the manifest is written)."""
    records = []
    for d in plan.disks:
        t = transfers[d.name]
        records.append(
            DiskRecord(
                name=d.name,
                size=t.index.disk_size,
                chunk_size=repo.chunk_size,
                chunk_count=t.index.count,
                index=repo.put_index(plan.backup_id, d.name, t.index),
                checksum=t.index.checksum(),
                format=d.format,
                cbt=t.cbt,
                stats=t.stats,
            )
        )
    manifest = BackupManifest(
        backup_id=plan.backup_id,
        repository_id=repo.config.repository_id,
        vm=plan.vm_record,
        kind="incremental" if any(r.cbt.mode != "full" for r in records) else "full",
        parent_id=plan.parent.backup_id if plan.parent else None,
        started_at=plan.started_at,
        finished_at=datetime.now(UTC),
        disks=tuple(records),
        stats=_sum(r.stats for r in records),
    )
    repo.put_manifest(manifest)
    return manifest


def _vm_record(vm: VMDescription, provider: str) -> VMRecord:
    allowed = "letters, digits and . _ @ + - only"
    for disk in vm.disks:
        if not is_safe_name(disk.name):
            raise ProviderError(f"provider {provider}: VM {vm.id} has a disk named {disk.name!r} ({allowed})")
    try:
        return VMRecord(
            id=vm.id,
            name=vm.name,
            provider=provider,
            config=base64.b64encode(vm.config).decode() if vm.config else None,
            config_format=vm.config_format or None,
            summary=vm.summary,
        )
    except ValidationError as exc:
        raise ProviderError(f"provider {provider}: VM id {vm.id!r} is not a safe name ({allowed})") from exc


def _parent(repo: Repository, vm_id: str) -> BackupManifest | None:
    damaged: list[Damaged] = []
    parent = repo.latest(vm_id, damaged=damaged)
    for backup_id, exc in damaged:
        log.warning("backup.damaged_manifest_skipped", backup=backup_id, error=str(exc))
    return parent


def _parent_indexes(repo: Repository, parent_disks: dict[str, DiskRecord]) -> dict[str, ChunkIndex]:
    indexes = {}
    for name, disk in parent_disks.items():
        try:
            indexes[name] = repo.disk_index(disk)
        except CorruptionError as exc:
            log.warning("backup.parent_index_unusable", disk=name, error=str(exc))
    return indexes


def _plan(
    disk: DiskInfo,
    source: DiskSource,
    parent_disks: dict[str, DiskRecord],
    parent_indexes: dict[str, ChunkIndex],
    config: BackupConfig,
    cbt_sources: list[CBTSource],
) -> DiskPlan:
    if disk.name not in parent_disks:
        return DiskPlan(CBTRecord(mode="full", reason="no parent backup of this disk"))
    parent = parent_indexes.get(disk.name)
    if parent is None:  # _parent_indexes logged the warning
        return DiskPlan(CBTRecord(mode="full", reason="the parent's index is missing or damaged"))
    if not config.enable_cbt:
        return DiskPlan(CBTRecord(mode="hash-compare", reason="CBT disabled by enableCBT"), parent)
    token = parent_disks[disk.name].cbt.token
    failed = False
    try:
        changed = changed_since(source, token, cbt_sources)  # the CBT source the core chooses for the disk
    except CBTError as exc:  # e.g. the token was rejected: compare chunk ids instead
        changed, failed = ChangedExtents.unavailable(f"changed-block tracking failed: {exc}"), True
    if changed.extents is None:
        # a warning when CBT failed or refused the parent's token; a source without CBT says so every time
        warn = failed or token is not None
        (log.warning if warn else log.info)("backup.cbt_fallback", disk=disk.name, reason=changed.reason)
        return DiskPlan(CBTRecord(mode="hash-compare", reason=changed.reason), parent)
    return DiskPlan(CBTRecord(mode="cbt", source=changed.source), parent, changed.extents)


def _control(config: BackupConfig) -> JobControl:
    """The control of a backup run without a job: never paused, limited as its config says."""
    control = JobControl()
    control.limits.change(config.bandwidth_limit_read, config.bandwidth_limit_write)
    return control


def _sum(stats: object) -> BackupStats:
    total = dict.fromkeys(BackupStats.model_fields, 0)
    for s in stats:  # type: ignore[attr-defined]
        for k, v in s.model_dump().items():
            total[k] += v
    return BackupStats(**total)
