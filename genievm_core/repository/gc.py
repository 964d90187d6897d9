"""Pruning backups and collecting garbage: mark and sweep, with a grace period and a lock.

1. *Mark*, under a shared lock (backups keep running): read every manifest and
   the indexes of those that stay; list ``chunks/`` and ``indexes/``. An object
   no staying manifest names is a *candidate*.
2. *Sweep*, under the exclusive lock (it waits until no backup, restore or
   verify holds a shared one): manifests committed since the mark are read and
   what they name stops being a candidate; the pruned manifests are deleted
   (their indexes become candidates). Candidates go into the ledger ``gc/pending`` with the
   time they were first seen unreferenced; one that has stayed unreferenced
   for the grace period is deleted, the others are kept for a later run.

No backup runs during the sweep, so nothing a backup stored, or found stored
and named in its index without storing it again, can be deleted under it.
The grace period keeps the chunks of an interrupted backup for a while, so
running it again re-uses them. An object the store refuses to delete yet
(``ObjectLockedError``: S3 Object Lock) is reported and stays in the ledger.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from genievm_core.errors import CorruptionError, ObjectLockedError, ObjectNotFoundError, RepositoryLockedError
from genievm_core.logging import get_logger
from genievm_core.models.manifest import BackupManifest
from genievm_core.repository.layout import is_chunk_key, is_index_key, unknown_keys
from genievm_core.repository.objects import ObjectDamaged
from genievm_core.repository.repo import Damaged, Repository

__all__ = ["LEDGER_KEY", "Mark", "PruneReport", "mark_repository", "prune_repository", "sweep_repository"]

LEDGER_KEY = "gc/pending"
DELETE_BATCH = 1000  # objects deleted between two cancel checks (one request where the target has delete_many)
LOCK_ROUND = 1.0  # seconds of each attempt at the exclusive lock; a cancel is honoured between them
log = get_logger("genievm.gc")
Checkpoint = Callable[[], None]


@dataclass
class PruneReport:
    dry_run: bool
    removed_backups: list[str] = field(default_factory=list)  # deleted (or, dry run, to be deleted)
    referenced_chunks: int = 0
    unreferenced: int = 0  # chunks and indexes no manifest names
    deleted: list[str] = field(default_factory=list)  # object keys deleted (dry run: past the grace period)
    kept_by_grace: int = 0  # unreferenced objects younger than the grace period
    not_deletable: list[str] = field(default_factory=list)  # the store refused (ObjectLockedError)
    leftovers_removed: int = 0  # temporary files of puts a killed process left (filesystem targets)

    def to_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "removed_backups": self.removed_backups,
            "referenced_chunks": self.referenced_chunks,
            "unreferenced_objects": self.unreferenced,
            "deleted_objects": len(self.deleted),
            "kept_by_grace": self.kept_by_grace,
            "not_deletable": len(self.not_deletable),
            "not_deletable_keys": self.not_deletable,
            "leftovers_removed": self.leftovers_removed,
        }


@dataclass
class Mark:
    """Phase 1 (mark, under a shared lock): what every manifest names, and what storage holds."""

    manifests: list[BackupManifest]  # every manifest read at the mark
    doomed: set[str]  # the backups to remove that were still there
    staying: list[BackupManifest]
    referenced: set[bytes]  # chunk ids the staying backups name
    chunk_keys: list[str]
    index_keys: list[str]


def prune_repository(
    repo: Repository,
    remove: Iterable[str] = (),
    *,
    grace: timedelta,
    dry_run: bool = False,
    lock_wait: float = 3600.0,
    checkpoint: Checkpoint = lambda: None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_phase: Callable[[str], None] = lambda _name: None,
) -> PruneReport:
    """Delete the backups ``remove``, then the objects no backup names (see the module's docstring).

    Phases: ``plan`` (the mark, ``mark_repository``) and ``commit`` (the sweep, ``sweep_repository``);
    a dry run reports from the mark alone.
    """
    on_phase("plan")
    mark = mark_repository(repo, remove, checkpoint)
    if dry_run:
        return _dry_run_report(repo, mark, grace, now())
    on_phase("commit")
    report = sweep_repository(repo, mark, grace=grace, lock_wait=lock_wait, checkpoint=checkpoint, now=now)
    log.info(
        "prune.done",
        backups=len(report.removed_backups),
        deleted=len(report.deleted),
        kept_by_grace=report.kept_by_grace,
        not_deletable=len(report.not_deletable),
    )
    return report


def mark_repository(repo: Repository, remove: Iterable[str], checkpoint: Checkpoint) -> Mark:
    """Phase 1, under a shared lock beside running backups: read every manifest and the staying indexes."""
    with repo.lock("shared", "garbage collection (mark)"):
        manifests = _all_manifests(repo)
        doomed = set(remove) & {m.backup_id for m in manifests}  # one that went meanwhile was pruned by someone else
        staying = [m for m in manifests if m.backup_id not in doomed]
        referenced = _referenced(repo, staying, checkpoint)
        chunk_keys, index_keys = list(repo.storage.list("chunks/")), list(repo.storage.list("indexes/"))
        for key in unknown_keys(chunk_keys + index_keys):
            repo.warn(f"repository {repo.url}: {key} is not a GenieVM object; left alone (see genievm verify)")
        return Mark(manifests, doomed, staying, referenced, chunk_keys, index_keys)


def _dry_run_report(repo: Repository, mark: Mark, grace: timedelta, at: datetime) -> PruneReport:
    report = PruneReport(True, removed_backups=sorted(mark.doomed))
    ledger = _load_ledger(repo)
    candidates = _candidates(mark.chunk_keys, mark.index_keys, mark.referenced, {m.backup_id for m in mark.staying})
    report.referenced_chunks, report.unreferenced = len(mark.referenced), len(candidates)
    report.deleted = sorted(k for k in candidates if at - ledger.get(k, at) >= grace)
    report.kept_by_grace = len(candidates) - len(report.deleted)
    return report


def sweep_repository(
    repo: Repository,
    mark: Mark,
    *,
    grace: timedelta,
    lock_wait: float,
    checkpoint: Checkpoint,
    now: Callable[[], datetime],
) -> PruneReport:
    """Phase 2, under the exclusive lock: delete the pruned manifests, then the candidates past their grace."""
    report = PruneReport(False, removed_backups=sorted(mark.doomed))
    staying, referenced = list(mark.staying), set(mark.referenced)
    seen = {m.backup_id for m in mark.manifests}
    with _exclusive_lock(repo, lock_wait, checkpoint):
        for backup_id in sorted(set(repo.backup_ids()) - seen):  # committed since the mark
            manifest = repo.get_manifest(backup_id)
            staying.append(manifest)
            referenced |= _referenced(repo, [manifest], checkpoint)
        for manifest in (m for m in mark.manifests if m.backup_id in mark.doomed):
            checkpoint()
            if _forget(repo, manifest.backup_id, report):
                log.info("prune.backup_removed", backup=manifest.backup_id, vm=manifest.vm.id)
            else:  # still there: it stays, and so does everything it names
                staying.append(manifest)
                referenced |= _referenced(repo, [manifest], checkpoint)
                report.removed_backups.remove(manifest.backup_id)
        report.referenced_chunks = len(referenced)
        candidates = _candidates(mark.chunk_keys, mark.index_keys, referenced, {m.backup_id for m in staying})
        report.unreferenced = len(candidates)
        ledger = _load_ledger(repo)
        at = now()
        pending = {key: ledger.get(key, at) for key in candidates}
        due = [key for key, first_seen in sorted(pending.items()) if at - first_seen >= grace]
        report.kept_by_grace = len(pending) - len(due)
        for start in range(0, len(due), DELETE_BATCH):
            checkpoint()
            batch = due[start : start + DELETE_BATCH]
            refused = _delete_all(repo, batch)
            report.not_deletable += [key for key in batch if key in refused]
            for key in batch:
                if key not in refused:
                    report.deleted.append(key)
                    del pending[key]
        leftovers = getattr(repo.storage, "remove_leftovers", None)
        if leftovers is not None:  # puts a killed process never finished: no other writer runs now, but lockers
            report.leftovers_removed = len(leftovers(("locks/",)))
        _save_ledger(repo, pending)
    return report


@contextmanager
def _exclusive_lock(repo: Repository, wait: float, checkpoint: Checkpoint) -> Iterator[None]:
    """The exclusive lock, waited for in short rounds so that a pause or cancel is honoured meanwhile."""
    deadline = time.monotonic() + wait
    with ExitStack() as stack:
        while True:
            checkpoint()
            remaining = max(0.0, deadline - time.monotonic())
            try:
                stack.enter_context(
                    repo.lock("exclusive", "prune and garbage collection", timeout=min(LOCK_ROUND, remaining))
                )
                break
            except RepositoryLockedError as exc:
                if remaining <= LOCK_ROUND:
                    raise
                log.info("gc.waiting_for_lock", holder=str(exc))
        yield


def _all_manifests(repo: Repository) -> list[BackupManifest]:
    damaged: list[Damaged] = []
    manifests = repo.manifests(damaged=damaged)
    if damaged:
        backup_id, exc = damaged[0]
        raise CorruptionError(
            f"cannot collect garbage: manifest {backup_id} cannot be read ({exc}), so what it names is unknown; "
            "repair or delete it first"
        )
    return manifests


def _referenced(repo: Repository, manifests: Iterable[BackupManifest], checkpoint: Checkpoint) -> set[bytes]:
    ids: set[bytes] = set()
    for manifest in manifests:
        for disk in manifest.disks:
            checkpoint()
            try:
                ids |= repo.disk_index(disk).stored_ids()
            except CorruptionError as exc:
                raise CorruptionError(
                    f"cannot collect garbage: backup {manifest.backup_id} disk {disk.name}: {exc}"
                ) from exc
    return ids


def _candidates(chunk_keys: list[str], index_keys: list[str], referenced: set[bytes], staying: set[str]) -> set[str]:
    """The chunks and indexes no staying backup names; an object that is neither is never one."""
    found = {k for k in chunk_keys if is_chunk_key(k) and bytes.fromhex(k.rpartition("/")[2]) not in referenced}
    found.update(k for k in index_keys if is_index_key(k) and k.split("/")[1] not in staying)
    return found


def _delete_all(repo: Repository, keys: list[str]) -> set[str]:
    """Delete ``keys``; the ones the store refuses under retention are returned (and logged).

    A target with ``delete_many`` (S3: 1000 keys a request) gets them all at once.
    """
    repo.check_locks()
    delete_many = getattr(repo.storage, "delete_many", None)
    if delete_many is None:
        return {key for key in keys if not _delete_one(repo, key)}
    failed: dict[str, Exception] = delete_many(keys)
    for key, exc in failed.items():
        if not isinstance(exc, ObjectLockedError):
            raise exc
        log.warning("gc.object_locked", key=key, error=str(exc))
    return set(failed)


def _delete_one(repo: Repository, key: str) -> bool:
    repo.check_locks()
    try:
        repo.storage.delete(key)
    except ObjectLockedError as exc:
        log.warning("gc.object_locked", key=key, error=str(exc))
        return False
    return True


def _forget(repo: Repository, backup_id: str, report: PruneReport) -> bool:
    """Remove a pruned backup (its ``forget`` entry in the backup log, then its manifest); False if refused."""
    try:
        repo.forget(backup_id)
    except ObjectLockedError as exc:
        log.warning("gc.object_locked", key=f"manifests/{backup_id}", error=str(exc))
        report.not_deletable.append(f"manifests/{backup_id}")
        return False
    return True


def _load_ledger(repo: Repository) -> dict[str, datetime]:
    try:
        blob = repo.storage.get(LEDGER_KEY)
    except ObjectNotFoundError:
        return {}
    try:
        data = json.loads(repo.codec.decode(LEDGER_KEY, blob))
        return {key: datetime.fromisoformat(when) for key, when in data["pending"].items()}
    except (ObjectDamaged, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        log.warning("gc.ledger_unreadable", error=str(exc))  # start afresh: objects wait one more grace period
        return {}


def _save_ledger(repo: Repository, pending: dict[str, datetime]) -> None:
    data = {"format_version": 1, "pending": {key: when.isoformat() for key, when in sorted(pending.items())}}
    repo.storage.put(LEDGER_KEY, repo.codec.encode(LEDGER_KEY, json.dumps(data).encode()))
