"""``genievm repo copy``: backups of one repository copied into another, sending only the chunks it lacks.

Each backup is copied as a backup commits: its chunks, then its indexes, then its manifest (with the
target's repository id), then its entry in the target's backup log. A backup whose manifest the target
has already is skipped, so a copy killed at any moment is resumed by running it again: the chunks it
sent are durable at once (never batched) and found there, so none is sent twice.

When the two repositories name chunks alike (both unencrypted, or one master key) a chunk id is the
same on both sides and a chunk the target has is not even read. Otherwise every chunk is read, checked
and encrypted anew under the target's keys, its id computed with the target's id key; the ids of the
backups both hold already (their indexes side by side) spare reading those chunks again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from genievm_core.engine.limits import Bandwidth
from genievm_core.errors import BackupNotFoundError, ConfigError
from genievm_core.models.manifest import BackupManifest, DiskRecord
from genievm_core.repository.index import ChunkIndex
from genievm_core.repository.objects import ZERO_ID
from genievm_core.repository.repo import Repository

__all__ = ["CopyStats", "copy_backups", "select_backups"]

WORKERS = 4


@dataclass
class CopyStats:
    backups_copied: int = 0
    backups_present: int = 0  # at the target already: skipped
    chunks_sent: int = 0
    bytes_sent: int = 0  # as stored at the target (compressed, encrypted)
    chunks_present: int = 0  # at the target already: not sent
    chunks_read: int = 0  # from the source

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def select_backups(source: Repository, vms: Iterable[str] = (), backup_ids: Iterable[str] = ()) -> list[BackupManifest]:
    """The backups to copy, oldest first: those of ``vms`` (ids or names) and ``backup_ids``; all when neither."""
    vms, backup_ids = list(vms), list(backup_ids)
    chosen = {b: source.get_manifest(b) for b in backup_ids}
    if vms or not backup_ids:
        every = source.manifests()
        for vm in vms:
            of_vm = [m for m in every if vm in (m.vm.id, m.vm.name)]
            if not of_vm:
                raise BackupNotFoundError(f"no backup of VM {vm} in repository {source.url}")
            chosen.update((m.backup_id, m) for m in of_vm)
        if not vms:
            chosen.update((m.backup_id, m) for m in every)
    return sorted(chosen.values(), key=lambda m: (m.finished_at, m.backup_id))


def copy_backups(
    source: Repository,
    target: Repository,
    backups: list[BackupManifest],
    *,
    limit: Bandwidth | None = None,
    on_copied: Callable[[BackupManifest, bool], None] | None = None,
    checkpoint: Callable[[], None] = lambda: None,
) -> CopyStats:
    """Copy ``backups`` of ``source`` into ``target`` under a shared lock of each; ``on_copied(manifest,
    sent)`` after each (``sent`` False: the target had it); ``checkpoint`` (a job's pause and cancel) before
    each chunk."""
    if source.config.repository_id == target.config.repository_id:
        raise ConfigError(f"invalid configuration: repo copy: {source.url} and {target.url} are one repository")
    if source.chunk_size != target.chunk_size:
        raise ConfigError(
            f"invalid configuration: repo copy: {source.url} has chunks of {source.chunk_size} bytes and "
            f"{target.url} of {target.chunk_size}: create the target with --chunk-size {source.chunk_size}"
        )
    with source.read_lock("copy"), target.lock("shared", "copy"):
        return _Copy(source, target, limit, checkpoint).run(backups, on_copied)


class _Copy:
    def __init__(
        self, source: Repository, target: Repository, limit: Bandwidth | None, checkpoint: Callable[[], None]
    ) -> None:
        self.source, self.target, self.limit, self.checkpoint = source, target, limit, checkpoint
        src_keys, dst_keys = source.codec.keys, target.codec.keys
        self.same_ids = (src_keys is None and dst_keys is None) or (
            src_keys is not None and dst_keys is not None and src_keys.id_key == dst_keys.id_key
        )
        self.stats = CopyStats()
        self.target_ids: dict[bytes, bytes] = {}  # source chunk id -> target chunk id, where known
        self.done: set[bytes] = set()  # target chunk ids this run sent or found
        self._lock = threading.Lock()

    def run(self, backups: list[BackupManifest], on_copied: Callable[[BackupManifest, bool], None] | None) -> CopyStats:
        present = set(self.target.backup_ids())
        if not self.same_ids:
            self._learn_ids([m for m in backups if m.backup_id in present])
        pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="genievm-copy")
        try:
            for manifest in backups:
                if manifest.backup_id in present:
                    self.stats.backups_present += 1
                else:
                    disks = tuple(self._copy_disk(pool, manifest, disk) for disk in manifest.disks)
                    copied = manifest.model_copy(update={"repository_id": self.target.config.repository_id,
                                                         "disks": disks})  # fmt: skip
                    self.target.put_manifest(copied)
                    self.stats.backups_copied += 1
                if on_copied is not None:
                    on_copied(manifest, manifest.backup_id not in present)
        finally:  # an interrupt or a failure: the chunks not begun are not sent, none waits for the limit
            if self.limit is not None:
                self.limit.release()
            pool.shutdown(wait=True, cancel_futures=True)
        return self.stats

    def _learn_ids(self, both: list[BackupManifest]) -> None:
        """The target ids of the chunks of backups both repositories hold: their indexes, entry by entry."""
        for manifest in both:
            theirs = {d.name: d for d in self.target.get_manifest(manifest.backup_id).disks}
            for disk in manifest.disks:
                if disk.name in theirs:
                    ours, copy = self.source.disk_index(disk), self.target.disk_index(theirs[disk.name])
                    self.target_ids.update(zip(ours, copy, strict=True))

    def _copy_disk(self, pool: ThreadPoolExecutor, manifest: BackupManifest, disk: DiskRecord) -> DiskRecord:
        index = self.source.disk_index(disk)
        unique = list(dict.fromkeys(i for i in index if i != ZERO_ID))
        translated = dict(zip(unique, pool.map(self._copy_chunk, unique), strict=True))
        copy = ChunkIndex.empty(index.disk_size, index.chunk_size)
        for i, chunk_id in enumerate(index):
            if chunk_id != ZERO_ID:
                copy[i] = translated[chunk_id]
        self.target.put_index(manifest.backup_id, disk.name, copy)
        return disk.model_copy(update={"checksum": copy.checksum()})

    def _copy_chunk(self, chunk_id: bytes) -> bytes:
        """The chunk's id at the target, where it is stored once this returns."""
        self.checkpoint()
        data = None
        target_id = chunk_id if self.same_ids else self.target_ids.get(chunk_id)
        if target_id is None:
            data = self._read(chunk_id)
            target_id = self.target.codec.chunk_id(data)
        with self._lock:
            if target_id in self.done:
                return target_id
        if self.target.has_object(target_id):  # a patched chunk there is not stored under its id
            with self._lock:
                self.stats.chunks_present += 1
        else:
            data = data if data is not None else self._read(chunk_id)
            sent = self.target.put_chunk(target_id, data, batched=False)
            if self.limit is not None:
                self.limit.take(sent)
            with self._lock:
                self.stats.chunks_sent += 1
                self.stats.bytes_sent += sent
        with self._lock:
            self.done.add(target_id)
            self.target_ids[chunk_id] = target_id
        return target_id

    def _read(self, chunk_id: bytes) -> bytes:
        data = self.source.get_chunk(chunk_id)
        with self._lock:
            self.stats.chunks_read += 1
        return data
