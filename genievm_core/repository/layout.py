"""Which object keys a repository holds, and the keys that are none of its objects.

A repository's folder may collect files GenieVM never wrote: a sync tool's
conflict copy, an editor's backup, a note left by a person. Such an object is
*unknown*: every command that lists a folder skips it (with a warning), verify
reports it as a finding, and garbage collection never deletes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from genievm_core.models.manifest import is_backup_id, is_safe_name

__all__ = ["is_chunk_key", "is_index_key", "is_known_key", "unknown_keys"]

_CHUNK = re.compile(r"^chunks/([0-9a-f]{2})/(\1[0-9a-f]{62})\Z")
_LOG_ENTRY = re.compile(r"^log/[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{8}\Z")


def is_chunk_key(key: str) -> bool:
    """``chunks/<id[0:2]>/<id>``: the id 64 lower-case hex digits, filed under its first two."""
    return bool(_CHUNK.match(key))


def is_index_key(key: str) -> bool:
    """``indexes/<backup id>/<disk name>``."""
    folder, backup_id, disk = (key.split("/", 2) + ["", ""])[:3]
    return folder == "indexes" and is_backup_id(backup_id) and is_safe_name(disk)


def is_known_key(key: str) -> bool:
    if key in ("config", "gc/pending") or is_chunk_key(key) or is_index_key(key):
        return True
    if key.startswith("manifests/"):
        return is_backup_id(key.removeprefix("manifests/"))
    return key.startswith("locks/") or bool(_LOG_ENTRY.match(key))  # any lock: lock.py reads what it can of each


def unknown_keys(keys: Iterable[str]) -> list[str]:
    """The keys among ``keys`` that are no object of a repository, sorted."""
    return sorted(k for k in keys if not is_known_key(k))
