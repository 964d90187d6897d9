"""The backup repository: chunk store, indexes, manifests, keys and locks."""

from __future__ import annotations

from genievm_core.repository.index import ChunkIndex, chunk_count
from genievm_core.repository.objects import ZERO_ID, ObjectCodec
from genievm_core.repository.repo import DEFAULT_CHUNK_SIZE, Damaged, Repository, new_backup_id

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ZERO_ID",
    "ChunkIndex",
    "Damaged",
    "ObjectCodec",
    "Repository",
    "chunk_count",
    "new_backup_id",
]
