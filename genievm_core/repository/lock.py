"""Repository locks kept as objects under ``locks/``, on any storage target.

Backups hold shared locks (several may run at once: chunks are
content-addressed and puts are atomic); pruning and garbage collection hold
an exclusive one. A lock left by a process that died on this host is detected
by its pid and broken.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from genievm_core.errors import ObjectNotFoundError, RepositoryLockedError, StoragePermissionError
from genievm_core.plugin.protocols import StorageTarget

__all__ = ["read_lock", "repository_lock"]

PREFIX = "locks/"
RISK = "reading without a lock: a prune or gc running meanwhile may delete what is read"
log = structlog.get_logger("genievm.lock")


@contextmanager
def repository_lock(
    storage: StorageTarget,
    kind: Literal["shared", "exclusive"],
    operation: str,
    *,
    timeout: float = 10.0,
) -> Iterator[None]:
    """Hold a ``kind`` lock on the repository for the duration of the block."""
    key = f"{PREFIX}{uuid.uuid4().hex}"
    me = {
        "kind": kind,
        "operation": operation,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "created_at": datetime.now(UTC).isoformat(),
    }
    deadline = time.monotonic() + timeout
    while True:
        blocker = _conflict(storage, kind, exclude=None)
        if blocker is None:
            storage.put(key, json.dumps(me).encode())
            blocker = _conflict(storage, kind, exclude=key)
            if blocker is None:
                break
            storage.delete(key)
        if time.monotonic() >= deadline:
            raise RepositoryLockedError(
                f"repository {storage.url} is locked by {blocker['operation']} "
                f"(pid {blocker['pid']} on {blocker['host']} since {blocker['created_at']})"
            )
        time.sleep(random.uniform(0.05, 0.3))
    try:
        yield
    finally:
        storage.delete(key)


@contextmanager
def read_lock(storage: StorageTarget, operation: str, *, take: bool = True, timeout: float = 10.0) -> Iterator[None]:
    """The shared lock of a command that only reads (list, verify, restore, serve), or none, after a warning.

    None when ``take`` is false (``--no-lock``) or when the storage refuses the
    lock's put (a read-only mount or snapshot, read-only S3 credentials): the
    command reads on, but a prune or garbage collection running meanwhile may
    delete what it is about to read (it then fails, as on a missing object).
    """
    with ExitStack() as held:
        if not take:
            log.warning("lock.skipped", repository=storage.url, operation=operation, reason="--no-lock", risk=RISK)
        else:
            try:
                held.enter_context(repository_lock(storage, "shared", operation, timeout=timeout))
            except StoragePermissionError as exc:
                log.warning(
                    "lock.skipped",
                    repository=storage.url,
                    operation=operation,
                    reason=f"the storage refuses writes ({exc})",
                    risk=RISK,
                )
        yield


def _conflict(storage: StorageTarget, kind: str, exclude: str | None) -> dict[str, Any] | None:
    for key in list(storage.list(PREFIX)):
        if key == exclude:
            continue
        try:
            holder = json.loads(storage.get(key))
        except (ObjectNotFoundError, ValueError):
            continue
        if _stale(holder):
            storage.delete(key)
            continue
        if kind == "exclusive" or holder.get("kind") == "exclusive":
            return dict(holder)
    return None


def _stale(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False
