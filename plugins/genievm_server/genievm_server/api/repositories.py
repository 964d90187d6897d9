"""Repositories of the server's settings: their stats and their backups."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from genievm_core.repository import Damaged
from genievm_core.repository.stats import repository_stats
from genievm_server.api.deps import ServiceDep, needs

router = APIRouter(prefix="/repositories")


@router.get("", summary="the repositories of the server's settings", **needs("read-only"))
def repositories(service: ServiceDep) -> list[dict[str, Any]]:
    return [{"name": name, "url": r.url} for name, r in sorted(service.settings.repositories.items())]


@router.get(
    "/{repository}/stats", summary="counts and sizes: backups, VMs, stored bytes, space saved", **needs("read-only")
)
def stats(repository: str, service: ServiceDep) -> dict[str, Any]:
    return repository_stats(service.repository(repository)).to_json()


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
