"""Repositories of the server's settings: their stats (with the last garbage collection), their backups, the
files in a backup's guest filesystem (with genievm-recovery), and pruning them by the keep rules."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from genievm_core.repository import Damaged
from genievm_core.repository.retention import RetentionPolicy
from genievm_core.repository.stats import repository_stats
from genievm_server import files
from genievm_server.api.deps import ServiceDep, needs

router = APIRouter(prefix="/repositories")
_Rule = Annotated[int | None, Field(ge=1)]  # a keep rule: at least 1, or not given


class PruneRequest(BaseModel):
    """The keep rules of ``genievm prune`` (``--keep-*``); without any, garbage collection alone (``genievm gc``)."""

    model_config = ConfigDict(extra="forbid")
    vms: list[str] | None = Field(default=None, description="the VMs whose backups the rules apply to; none: every VM")
    keep_last: _Rule = None
    keep_daily: _Rule = None
    keep_weekly: _Rule = None
    keep_monthly: _Rule = None
    retention_days: _Rule = None
    max_backups: _Rule = None
    dry_run: bool = Field(default=False, description="report what would be removed; remove nothing")


class FilesRestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vm: str | None = Field(default=None, description="the VM, when the backup is 'latest'")
    paths: list[str] = Field(min_length=1, description="files and folders in the guest")
    restore_path: str = Field(description="a folder under the server's restore_root, made if missing")


@router.get("", summary="the repositories of the server's settings", **needs("read-only"))
def repositories(service: ServiceDep) -> list[dict[str, Any]]:
    return [{"name": name, "url": r.url} for name, r in sorted(service.settings.repositories.items())]


@router.get(
    "/{repository}/stats", summary="counts and sizes: backups, VMs, stored bytes, space saved", **needs("read-only")
)
def stats(repository: str, service: ServiceDep) -> dict[str, Any]:
    """``dedup_ratio``: what the backups' disks hold over what they stored; ``last_gc``: when the last prune or
    garbage collection of the repository that was not a dry run ended, by the job registry (null: none there)."""
    found = repository_stats(service.repository(repository))
    last = service.last_gc(repository)
    return found.to_json() | {
        "dedup_ratio": round(found.backups_size / found.stored_size, 2) if found.stored_size else None,
        "last_gc": last.finished_at.isoformat() if last is not None and last.finished_at is not None else None,
        "last_gc_job": last.id if last is not None else None,
    }


@router.post(
    "/{repository}/prune",
    status_code=202,
    summary="start a prune: the keep rules on the backups, then garbage collection (a dry run: report only)",
    **needs("operator"),
)
def prune(repository: str, request: PruneRequest, service: ServiceDep) -> dict[str, Any]:
    rules = RetentionPolicy(**request.model_dump(exclude={"vms", "dry_run"}))
    job = service.start_prune(repository, rules, request.vms, dry_run=request.dry_run)
    return service.job(job.id).to_json()


@router.get(
    "/{repository}/backups", summary="the backups of the repository (of one VM), oldest first", **needs("read-only")
)
def backups(repository: str, service: ServiceDep, vm: str | None = None) -> dict[str, Any]:
    damaged: list[Damaged] = []
    found = service.genievm.backups(service.repository(repository), vm, damaged=damaged)
    return {
        "backups": [
            {
                "backup_id": m.backup_id,
                "vm": m.vm.id,
                "vm_name": m.vm.name,
                "kind": m.kind,
                "parent_id": m.parent_id,
                "started_at": m.started_at.isoformat(),
                "finished_at": m.finished_at.isoformat(),
                "size": sum(d.size for d in m.disks),
                "stored": m.stats.bytes_stored,
                "disks": [d.name for d in m.disks],
            }
            for m in found
        ],
        "damaged": [{"backup_id": backup_id, "error": str(exc)} for backup_id, exc in damaged],
    }


@router.get("/{repository}/backups/{backup_id}", summary="one backup's manifest", **needs("read-only"))
def backup(repository: str, backup_id: str, service: ServiceDep, vm: str | None = None) -> dict[str, Any]:
    manifest = service.repository(repository).find_backup(vm, backup_id)
    result: dict[str, Any] = manifest.model_dump(mode="json")
    return result


@router.get(
    "/{repository}/backups/{backup_id}/files",
    summary="a folder of the backup's guest filesystem (genievm files ls; takes the appliance's start, seconds)",
    **needs("read-only"),
)
def guest_folder(
    repository: str, backup_id: str, service: ServiceDep, path: str = "/", vm: str | None = None
) -> dict[str, Any]:
    return files.list_folder(service, repository, vm, backup_id, path)


@router.post(
    "/{repository}/backups/{backup_id}/files/restore",
    status_code=202,
    summary="start restoring files and folders of the backup's guest filesystem under the restore_root",
    **needs("operator"),
)
def restore_files(repository: str, backup_id: str, request: FilesRestoreRequest, service: ServiceDep) -> dict[str, Any]:
    job = files.start_extract(service, repository, request.vm, backup_id, request.paths, request.restore_path)
    return service.job(job.id).to_json()
