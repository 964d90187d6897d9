"""A copy of backups into another repository as a job (``genievm server`` policies' ``copy_to``)."""

from __future__ import annotations

from typing import Any

from genievm_core.jobs.job import Job
from genievm_core.models.manifest import BackupManifest
from genievm_core.repository import Repository
from genievm_core.repository.copy import copy_backups

__all__ = ["CopyJob"]


class CopyJob(Job):
    """``backups`` of ``source`` copied into ``target`` (``genievm_core.repository.copy``); cancellable between
    chunks."""

    kind = "copy"

    def __init__(self, source: Repository, target: Repository, backups: list[BackupManifest]) -> None:
        vms = sorted({m.vm.name for m in backups})
        super().__init__(
            description=f"copy of {len(backups)} backups ({', '.join(vms) or 'none'}) to {target.url}",
            vm=",".join(vms) if vms else None,
            repository=source.url,
        )
        self.source, self.target, self.backups = source, target, backups

    def execute(self) -> dict[str, Any]:
        stats = copy_backups(self.source, self.target, self.backups, checkpoint=self.control.checkpoint)
        return {"target": self.target.url} | stats.to_json()
