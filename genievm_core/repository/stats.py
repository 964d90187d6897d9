"""What a repository holds and what deduplication and compression save (``repo info``, ``repo stats``).

Sizes come from the backups' manifests (the storage interface has no object sizes):
``stored`` is what the backups still in the repository wrote for their new chunks, so a
chunk first written by a backup since pruned is not in it until garbage collection removes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from genievm_core.repository.layout import is_chunk_key
from genievm_core.repository.objects import ZERO_ID
from genievm_core.repository.repo import Damaged, Repository

__all__ = ["RepositoryStats", "repository_stats"]


@dataclass
class RepositoryStats:
    backups: int
    vms: int
    damaged_manifests: int  # manifests that cannot be read: their backups are in no size below
    chunk_objects: int  # objects under chunks/ (referenced, or waiting for garbage collection)
    backups_size: int  # the disks of every backup: what restoring each of them would write
    stored_size: int  # bytes the backups wrote for their new chunks (compressed, encrypted)
    unique_chunks: int | None = None  # chunks the backups reference, each once (``deep``)
    unique_size: int | None = None  # their plaintext (``deep``)

    @property
    def space_saved(self) -> float:
        """The share of ``backups_size`` that deduplication, zero detection and compression save."""
        return 1 - self.stored_size / self.backups_size if self.backups_size else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"space_saved": round(self.space_saved, 4)}


def repository_stats(repo: Repository, *, deep: bool = False) -> RepositoryStats:
    """The repository's counts and sizes; ``deep`` also reads every index for the unique chunks."""
    damaged: list[Damaged] = []
    manifests = repo.manifests(damaged=damaged)
    stats = RepositoryStats(
        backups=len(manifests) + len(damaged),
        damaged_manifests=len(damaged),
        vms=len({m.vm.id for m in manifests}),
        chunk_objects=sum(1 for key in repo.storage.list("chunks/") if is_chunk_key(key)),
        backups_size=sum(d.size for m in manifests for d in m.disks),
        stored_size=sum(m.stats.bytes_stored for m in manifests),
    )
    if deep:
        lengths: dict[bytes, int] = {}
        for manifest in manifests:
            for disk in manifest.disks:
                index = repo.disk_index(disk)
                for i, chunk_id in enumerate(index):
                    if chunk_id != ZERO_ID and chunk_id not in lengths:
                        lengths[chunk_id] = index.chunk_length(i)
        stats.unique_chunks, stats.unique_size = len(lengths), sum(lengths.values())
    return stats
