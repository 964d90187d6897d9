"""A GenieVM repository on a storage target: config, chunks, indexes, manifests.

Object keys::

    config                                  RepositoryConfig, JSON, never encrypted
    chunks/<id[0:2]>/<id>                   chunk objects, id in hex
    indexes/<backup id>/<disk name>         binary chunk indexes
    manifests/<backup id>                   BackupManifest, JSON
    locks/<uuid>                            lock holders, JSON
    gc/pending                              garbage collection's ledger of unreferenced objects

Every object but ``config`` and locks is in the envelope of ``objects.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Literal

from pydantic import ValidationError

from genievm_core.errors import (
    BackupNotFoundError,
    ConfigError,
    CorruptionError,
    ObjectNotFoundError,
    PassphraseRequiredError,
    RepositoryError,
    RepositoryExistsError,
    RepositoryNotFoundError,
    UnsupportedFormatError,
    WrongPassphraseError,
)
from genievm_core.models.manifest import (
    FORMAT_VERSION,
    BackupManifest,
    DiskRecord,
    RepositoryConfig,
    is_backup_id,
)
from genievm_core.plugin.protocols import StorageTarget
from genievm_core.repository.index import ChunkIndex
from genievm_core.repository.keys import WrongPassphrase, create_keys, unwrap_keys
from genievm_core.repository.lock import read_lock, repository_lock
from genievm_core.repository.objects import ObjectCodec, ObjectDamaged

__all__ = ["DEFAULT_CHUNK_SIZE", "Repository", "new_backup_id"]

DEFAULT_CHUNK_SIZE = 4 << 20
KNOWN_FEATURES: frozenset[str] = frozenset()
MAX_MANIFEST = 16 << 20
PassphraseSource = Callable[[], str]
Damaged = tuple[str, RepositoryError]


def new_backup_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ-") + uuid.uuid4().hex[:8]


class Repository:
    """An open repository. Create with ``Repository.init`` or ``Repository.open``."""

    def __init__(self, storage: StorageTarget, config: RepositoryConfig, codec: ObjectCodec) -> None:
        self.storage = storage
        self.config = config
        self.codec = codec

    @property
    def url(self) -> str:
        return self.storage.url

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @classmethod
    def init(
        cls,
        storage: StorageTarget,
        *,
        passphrase: str | None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Repository:
        """Create a repository; encrypted when ``passphrase`` is given."""
        if storage.exists("config"):
            raise RepositoryExistsError(f"a repository already exists at {storage.url}")
        if next(iter(storage.list("")), None) is not None:
            raise RepositoryExistsError(f"{storage.url} is not empty; a repository needs a folder of its own")
        keys, encryption = create_keys(passphrase) if passphrase is not None else (None, None)
        try:
            config = RepositoryConfig(
                repository_id=uuid.uuid4().hex,
                created_at=datetime.now(UTC),
                chunk_size=chunk_size,
                chunk_id="blake3-keyed" if keys else "blake3",
                encryption=encryption,
            )
        except ValidationError as exc:
            raise ConfigError(f"cannot create repository: {_first(exc)}") from exc
        storage.put("config", config.model_dump_json(indent=2).encode())
        return cls(storage, config, ObjectCodec(keys))

    @classmethod
    def open(
        cls,
        storage: StorageTarget,
        *,
        passphrase: PassphraseSource | None = None,
        compression_level: int = 3,
    ) -> Repository:
        try:
            raw = storage.get("config")
        except ObjectNotFoundError:
            raise RepositoryNotFoundError(
                f"no GenieVM repository at {storage.url} (create one with `genievm repo init`)"
            ) from None
        config = _parse_config(storage.url, raw)
        keys = None
        if config.encryption is not None:
            if passphrase is None:
                raise PassphraseRequiredError(
                    f"repository {storage.url} is encrypted: set GENIEVM_PASSPHRASE or --passphrase-file"
                )
            try:
                keys = unwrap_keys(passphrase(), config.encryption)
            except WrongPassphrase:
                raise WrongPassphraseError(f"wrong passphrase for repository {storage.url}") from None
        return cls(storage, config, ObjectCodec(keys, compression_level=compression_level))

    lock_reads = True  # False (``--no-lock``): read_lock takes no lock

    def read_lock(self, operation: str) -> AbstractContextManager[None]:
        """The shared lock of a command that only reads; none, with a warning, when ``lock_reads`` is off or
        the storage refuses writes (``genievm_core.repository.lock.read_lock``)."""
        return read_lock(self.storage, operation, take=self.lock_reads)

    def lock(
        self, kind: Literal["shared", "exclusive"], operation: str, *, timeout: float = 10.0
    ) -> AbstractContextManager[None]:
        """Hold a lock for the block; wait up to ``timeout`` seconds for a conflicting one to go."""
        return repository_lock(self.storage, kind, operation, timeout=timeout)

    # chunks

    @staticmethod
    def chunk_key(chunk_id: bytes) -> str:
        hexid = chunk_id.hex()
        return f"chunks/{hexid[:2]}/{hexid}"

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self.storage.exists(self.chunk_key(chunk_id))

    def put_chunk(self, chunk_id: bytes, data: bytes) -> int:
        """Store a chunk; return the bytes written."""
        blob = self.codec.encode(chunk_id.hex(), data)
        self.storage.put(self.chunk_key(chunk_id), blob)
        return len(blob)

    def get_chunk(self, chunk_id: bytes) -> bytes:
        key = self.chunk_key(chunk_id)
        try:
            blob = self.storage.get(key)
        except ObjectNotFoundError:
            raise CorruptionError(f"chunk {chunk_id.hex()} is missing") from None
        try:
            return self.codec.decode_chunk(chunk_id, blob)
        except ObjectDamaged as exc:
            raise CorruptionError(f"chunk {chunk_id.hex()} is corrupt: {exc}") from None

    # indexes

    def put_index(self, backup_id: str, disk: str, index: ChunkIndex) -> str:
        key = f"indexes/{backup_id}/{disk}"
        self.storage.put(key, self.codec.encode(key, index.to_bytes()))
        return key

    def get_index(self, key: str) -> ChunkIndex:
        try:
            return ChunkIndex.from_bytes(self.codec.decode(key, self.storage.get(key)))
        except ObjectNotFoundError:
            raise CorruptionError(f"index {key} is missing") from None
        except ObjectDamaged as exc:
            raise CorruptionError(f"index {key} is corrupt: {exc}") from None

    def disk_index(self, disk: DiskRecord) -> ChunkIndex:
        """The index of a disk in a manifest, checked against the manifest's size, chunk size and checksum."""
        index = self.get_index(disk.index)
        expected = (disk.size, self.chunk_size, disk.chunk_count)
        if (index.disk_size, index.chunk_size, index.count) != expected or disk.chunk_size != self.chunk_size:
            raise CorruptionError(f"index {disk.index} is corrupt: it does not fit the disk's size or chunk size")
        if index.checksum() != disk.checksum:
            raise CorruptionError(f"index {disk.index} is corrupt: it does not match the manifest's checksum")
        return index

    # manifests

    def put_manifest(self, manifest: BackupManifest) -> None:
        key = f"manifests/{manifest.backup_id}"
        self.storage.put(key, self.codec.encode(key, manifest.model_dump_json(indent=1).encode()))

    def get_manifest(self, backup_id: str) -> BackupManifest:
        if not is_backup_id(backup_id):
            raise BackupNotFoundError(f"no backup {backup_id!r} in repository {self.url} (not a backup id)")
        key = f"manifests/{backup_id}"
        try:
            blob = self.storage.get(key)
        except ObjectNotFoundError:
            raise BackupNotFoundError(f"no backup {backup_id} in repository {self.url}") from None
        if len(blob) > MAX_MANIFEST:
            raise CorruptionError(f"manifest {backup_id} is corrupt: larger than {MAX_MANIFEST} bytes")
        try:
            data = self.codec.decode(key, blob, max_size=MAX_MANIFEST)  # a small frame may claim gigabytes
        except ObjectDamaged as exc:
            raise CorruptionError(f"manifest {backup_id} is corrupt: {exc}") from None
        if len(data) > MAX_MANIFEST:
            raise CorruptionError(f"manifest {backup_id} is corrupt: larger than {MAX_MANIFEST} bytes")
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested beyond the parser's depth
            raise CorruptionError(f"manifest {backup_id} is corrupt: {exc}") from None
        if isinstance(raw, dict) and raw.get("format_version", 0) > FORMAT_VERSION:
            raise UnsupportedFormatError(
                f"backup {backup_id} has format {raw['format_version']}; this GenieVM reads {FORMAT_VERSION}"
            )
        try:
            manifest = BackupManifest.model_validate(raw)
        except ValidationError as exc:
            raise CorruptionError(f"manifest {backup_id} is corrupt: {_first(exc)}") from None
        if manifest.backup_id != backup_id or manifest.repository_id != self.config.repository_id:
            raise CorruptionError(f"manifest {backup_id} is corrupt: it names another backup or repository")
        return manifest

    def backup_ids(self) -> list[str]:
        return sorted(key.removeprefix("manifests/") for key in self.storage.list("manifests/"))

    def manifests(self, vm_id: str | None = None, *, damaged: list[Damaged] | None = None) -> list[BackupManifest]:
        """Every backup (of one VM when ``vm_id`` is given), oldest first by finish time.

        A manifest that cannot be read raises, or, when a ``damaged`` list is
        given, is appended to it as ``(backup id, error)`` and skipped.
        """
        found = []
        for backup_id in self.backup_ids():
            try:
                manifest = self.get_manifest(backup_id)
            except (CorruptionError, UnsupportedFormatError) as exc:
                if damaged is None:
                    raise
                damaged.append((backup_id, exc))
                continue
            if vm_id is None or manifest.vm.id == vm_id:
                found.append(manifest)
        return sorted(found, key=lambda m: (m.finished_at, m.backup_id))

    def latest(self, vm_id: str | None, *, damaged: list[Damaged] | None = None) -> BackupManifest | None:
        """The backup of ``vm_id`` that finished last, or None."""
        backups = self.manifests(vm_id, damaged=damaged)
        return backups[-1] if backups else None

    def find_backup(self, vm: str | None, backup_id: str) -> BackupManifest:
        """A backup by id, or the newest of ``vm`` when ``backup_id`` is ``latest``.

        ``vm`` is a VM id or, when no backup has that id, a VM name (which must name one VM).
        """
        if backup_id != "latest":
            manifest = self.get_manifest(backup_id)
            if vm is not None and vm not in (manifest.vm.id, manifest.vm.name):
                raise BackupNotFoundError(f"backup {backup_id} is of VM {manifest.vm.id}, not {vm}")
            return manifest
        latest = self.latest(vm) or self._latest_by_name(vm)
        if latest is None:
            raise BackupNotFoundError(f"no backup of VM {vm} in repository {self.url}")
        return latest

    def _latest_by_name(self, name: str | None) -> BackupManifest | None:
        named = [m for m in self.manifests() if m.vm.name == name]
        ids = sorted({m.vm.id for m in named})
        if len(ids) > 1:
            raise BackupNotFoundError(f"VM name {name} is ambiguous in {self.url}: give one of {', '.join(ids)}")
        return named[-1] if named else None


def _parse_config(url: str, raw: bytes) -> RepositoryConfig:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorruptionError(f"repository config at {url} is corrupt: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptionError(f"repository config at {url} is corrupt: not an object")
    version = data.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"repository {url} has format {version}; this GenieVM reads format {FORMAT_VERSION}"
        )
    unknown = set(data.get("features") or ()) - KNOWN_FEATURES
    if unknown:
        raise UnsupportedFormatError(f"repository {url} needs features this GenieVM lacks: {sorted(unknown)}")
    try:
        return RepositoryConfig.model_validate(data)
    except ValidationError as exc:
        raise CorruptionError(f"repository config at {url} is corrupt: {_first(exc)}") from None


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return ".".join(str(p) for p in err["loc"]) + ": " + err["msg"]
