"""Repository locks kept as objects under ``locks/``, on any storage target.

Backups hold shared locks (several may run at once: chunks are
content-addressed and puts are atomic); pruning and garbage collection hold
an exclusive one. While a lock is held, a background thread rewrites its
``refreshed_at`` every ``refresh_every`` seconds (the heartbeat).

A lock is stale when its process is gone (a lock of this host, judged by its
pid: a live process's lock is never stale), or, for a lock of another host,
when it has not been refreshed for ``stale_after`` seconds (restic's rule:
30 minutes, refreshed every 5). Stale locks are ignored and removed by the
next lock taken; ``genievm repo unlock`` removes them on request.

A holder that cannot refresh its lock for long enough that others may take
it as stale has lost it: ``HeldLock.check`` then raises ``LockLostError``, and
the repository calls it before every chunk, index, manifest and deletion, so
the job stops with that one line instead of writing on unprotected.

Whoever removes a lock whose holder may still run (``genievm repo unlock
--force``, or a stale lock of another host taken over) first leaves a tombstone
beside it, ``locks/<id>.removed``, and the
heartbeat looks for it after each refresh: a refresh racing the removal would
otherwise put the lock back unnoticed. Tombstones are plain text, not JSON,
so readers of older versions skip them as they skip any unreadable lock.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from genievm_core.choices import LOCK_STALE_AFTER
from genievm_core.errors import (
    GenieVMError,
    LockLostError,
    ObjectNotFoundError,
    RepositoryLockedError,
    StoragePermissionError,
)
from genievm_core.logging import get_logger
from genievm_core.plugin.protocols import StorageTarget
from genievm_core.processes import process_alive

__all__ = [
    "STALE_AFTER",
    "HeldLock",
    "LockPolicy",
    "describe_lock",
    "is_stale",
    "read_lock",
    "remove_locks",
    "repository_lock",
]

PREFIX = "locks/"
TOMBSTONE = ".removed"  # locks/<id>.removed: its holder learns the lock was removed
STALE_AFTER = LOCK_STALE_AFTER  # seconds without a refresh after which another host's lock is stale
REMOVED = "its lock object was removed by another process (genievm repo unlock --force?)"
RISK = "reading without a lock: a prune or gc running meanwhile may delete what is read"
log = get_logger("genievm.lock")


@dataclass(frozen=True)
class LockPolicy:
    """How a repository's locks are taken: wait for a conflicting one, staleness, heartbeat."""

    wait: float = 10.0  # seconds to wait for a conflicting lock to go
    stale_after: float = STALE_AFTER
    refresh_every: float | None = None  # None: stale_after / 6 (5 minutes for 30)

    @property
    def refresh_interval(self) -> float:
        return self.refresh_every if self.refresh_every is not None else self.stale_after / 6


class HeldLock:
    """A lock this process holds, kept fresh by a heartbeat thread until ``release``."""

    def __init__(self, storage: StorageTarget, key: str, record: dict[str, Any], policy: LockPolicy) -> None:
        self.storage, self.key, self.record, self.policy = storage, key, record, policy
        self.lost: str | None = None  # why the lock is lost, once it is
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name=f"genievm-lock-{key[-8:]}", daemon=True)

    def start(self) -> HeldLock:
        self._thread.start()
        return self

    def check(self) -> None:
        """Raise ``LockLostError`` once the lock is lost: nothing more may be written under it."""
        if self.lost is not None:
            raise LockLostError(
                f"repository {self.storage.url}: lost this process's lock ({self.record['operation']}): "
                f"{self.lost}; stopped before writing anything more"
            )

    def release(self) -> None:
        """Stop the heartbeat and remove the lock; a failure to remove it is a warning (it goes stale)."""
        self._stop.set()
        self._thread.join()
        try:
            self.storage.delete(self.key)
            if self.lost is not None:  # a tombstone is likely: it was seen, or the lock was found gone
                self.storage.delete(self.key + TOMBSTONE)
        except ObjectNotFoundError:
            pass
        except GenieVMError as exc:  # the job's own outcome stands; the lock is stale once this process ends
            log.warning("lock.release_failed", key=self.key, error=str(exc))

    def _heartbeat(self) -> None:
        interval = self.policy.refresh_interval
        last_refresh = time.monotonic()
        while not self._stop.wait(interval):
            try:
                if not self.storage.exists(self.key):
                    self._lose(REMOVED)
                    return
                self.record["refreshed_at"] = datetime.now(UTC).isoformat()
                self.storage.put(self.key, json.dumps(self.record).encode())
                last_refresh = time.monotonic()
                if self.storage.exists(self.key + TOMBSTONE):  # removed between the look and the put
                    self._lose(REMOVED)
                    return
            except Exception as exc:  # noqa: BLE001 - any failure of the storage is a failed refresh
                unrefreshed = time.monotonic() - last_refresh
                log.warning("lock.refresh_failed", key=self.key, error=str(exc), unrefreshed_seconds=round(unrefreshed))
                if unrefreshed + interval >= self.policy.stale_after:  # before others may take it as stale
                    self._lose(f"it could not be refreshed for {unrefreshed:.0f} s ({exc})")
                    return

    def _lose(self, reason: str) -> None:
        self.lost = reason
        log.error("lock.lost", key=self.key, operation=self.record["operation"], reason=reason)


@contextmanager
def repository_lock(
    storage: StorageTarget,
    kind: Literal["shared", "exclusive"],
    operation: str,
    *,
    timeout: float = 10.0,
    policy: LockPolicy | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> Iterator[HeldLock]:
    """Hold a ``kind`` lock on the repository for the duration of the block, refreshed meanwhile;
    ``checkpoint`` (a job's: it raises once the job is cancelled) is called while it waits."""
    policy = policy or LockPolicy()
    key = f"{PREFIX}{uuid.uuid4().hex}"
    now = datetime.now(UTC).isoformat()
    me = {
        "kind": kind,
        "operation": operation,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "created_at": now,
        "refreshed_at": now,
        "stale_after": policy.stale_after,  # others wait at least this long for a refresh
    }
    deadline = time.monotonic() + timeout
    while True:
        blocker = _conflict(storage, kind, None, policy.stale_after)
        if blocker is None:
            storage.put(key, json.dumps(me).encode())
            blocker = _conflict(storage, kind, key, policy.stale_after)
            if blocker is None:
                break
            storage.delete(key)
        if time.monotonic() >= deadline:
            raise RepositoryLockedError(
                f"repository {storage.url} is locked by {describe_lock(blocker)}; "
                "if that process is gone, run `genievm repo unlock`"
            )
        if checkpoint is not None:
            checkpoint()
        time.sleep(random.uniform(0.05, 0.3))
    held = HeldLock(storage, key, me, policy).start()
    try:
        yield held
    finally:
        held.release()


@contextmanager
def read_lock(
    storage: StorageTarget,
    operation: str,
    *,
    take: bool = True,
    timeout: float = 10.0,
    policy: LockPolicy | None = None,
) -> Iterator[HeldLock | None]:
    """The shared lock of a command that only reads (list, verify, restore, serve), or none, after a warning.

    None when ``take`` is false (``--no-lock``) or when the storage refuses the
    lock's put (a read-only mount or snapshot, read-only S3 credentials): the
    command reads on, but a prune or garbage collection running meanwhile may
    delete what it is about to read (it then fails, as on a missing object).
    """
    with ExitStack() as held:
        lock: HeldLock | None = None
        if not take:
            log.warning("lock.skipped", repository=storage.url, operation=operation, reason="--no-lock", risk=RISK)
        else:
            try:
                lock = held.enter_context(repository_lock(storage, "shared", operation, timeout=timeout, policy=policy))
            except StoragePermissionError as exc:
                log.warning(
                    "lock.skipped",
                    repository=storage.url,
                    operation=operation,
                    reason=f"the storage refuses writes ({exc})",
                    risk=RISK,
                )
        yield lock


def remove_locks(
    storage: StorageTarget, *, stale_after: float = STALE_AFTER, force: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Remove the stale locks (every lock with ``force``); the removed and the kept ones, each with its key."""
    removed, kept = [], []
    for key, holder in _holders(storage, stale_after):
        holder = {"key": key} | holder
        if force or is_stale(holder, stale_after):
            try:
                _remove(storage, key, holder, "genievm repo unlock --force" if force else "genievm repo unlock (stale)")
            except ObjectNotFoundError:
                continue
            log.info("lock.removed", key=key, holder=describe_lock(holder), forced=force)
            removed.append(holder)
        else:
            kept.append(holder)
    return removed, kept


def describe_lock(holder: dict[str, Any]) -> str:
    """``prune (pid 4242 on host1 since ..., refreshed ...)``; old locks (no heartbeat) without the last part."""
    refreshed = holder.get("refreshed_at")
    beat = f", refreshed {refreshed}" if refreshed and refreshed != holder.get("created_at") else ""
    return (
        f"{holder.get('operation')} (pid {holder.get('pid')} on {holder.get('host')} "
        f"since {holder.get('created_at')}{beat})"
    )


def is_stale(holder: dict[str, Any], stale_after: float = STALE_AFTER, now: datetime | None = None) -> bool:
    """A lock of this host whose process is gone, or one of another host not refreshed for ``stale_after``
    seconds (or the longer time the lock itself declares)."""
    if holder.get("host") == socket.gethostname():
        return not _process_runs(holder.get("pid"))
    beat = _when(holder.get("refreshed_at")) or _when(holder.get("created_at"))  # old locks: no heartbeat
    if beat is None:
        return False  # no time to judge by: only `genievm repo unlock --force` removes it
    declared = holder.get("stale_after")  # the holder's own, when longer: it refreshes that seldom
    if isinstance(declared, int | float) and not isinstance(declared, bool):
        stale_after = max(stale_after, float(declared))
    return ((now or datetime.now(UTC)) - beat).total_seconds() > stale_after


def _remove(storage: StorageTarget, key: str, holder: dict[str, Any], by: str) -> None:
    """Remove a lock so that its holder, if it may still run, learns of it: the tombstone first, then the lock."""
    if holder.get("host") != socket.gethostname() or _process_runs(holder.get("pid")):
        storage.put(key + TOMBSTONE, f"removed_at {datetime.now(UTC).isoformat()} by {by}\n".encode())
    storage.delete(key)


def _holders(storage: StorageTarget, stale_after: float = STALE_AFTER) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each lock with its record; tombstones of removed locks go once ``stale_after`` has passed."""
    keys = set(storage.list(PREFIX))
    for tombstone in sorted(k for k in keys if k.endswith(TOMBSTONE)):
        keys.discard(tombstone)
        if _tombstone_expired(storage, tombstone, stale_after):
            try:
                storage.delete(tombstone)  # its holder has had time to see it (or is gone)
            except GenieVMError as exc:  # left for the next lock: harmless meanwhile
                log.warning("lock.tombstone_kept", key=tombstone, error=str(exc))
    for key in sorted(keys):
        try:
            holder = json.loads(storage.get(key))
        except (ObjectNotFoundError, ValueError):
            continue
        if isinstance(holder, dict):
            yield key, holder


def _tombstone_expired(storage: StorageTarget, key: str, stale_after: float) -> bool:
    try:
        text = storage.get(key).decode("ascii", "replace")
    except ObjectNotFoundError:
        return False
    when = _when(text.removeprefix("removed_at ").split(" ", 1)[0])
    return when is None or (datetime.now(UTC) - when).total_seconds() > stale_after


def _conflict(storage: StorageTarget, kind: str, exclude: str | None, stale_after: float) -> dict[str, Any] | None:
    for key, holder in _holders(storage, stale_after):
        if key == exclude:
            continue
        if is_stale(holder, stale_after):
            log.warning("lock.stale_removed", key=key, holder=describe_lock(holder))
            try:
                _remove(storage, key, holder, "a lock taken over it (stale)")
            except ObjectNotFoundError:
                pass
            continue
        if kind == "exclusive" or holder.get("kind") == "exclusive":
            return holder
    return None


def _process_runs(pid: object) -> bool:
    try:
        number = int(pid)  # type: ignore[call-overload]
    except (ValueError, TypeError):
        return True  # no pid to judge by: not ours to break
    return number <= 0 or process_alive(number)


def _when(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
