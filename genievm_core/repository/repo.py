"""A GenieVM repository on a storage target: config, chunks, indexes, manifests.

Object keys::

    config                                  RepositoryConfig, JSON, never encrypted, authenticated (config.py)
    chunks/<id[0:2]>/<id>                   chunk objects, id in hex
    indexes/<backup id>/<disk name>         binary chunk indexes
    manifests/<backup id>                   BackupManifest, JSON
    log/<entry id>                          the backup log, one entry an object (backup_log.py)
    locks/<uuid>                            lock holders, JSON
    locks/<uuid>.removed                    tombstones of removed locks, text (lock.py)
    gc/pending                              garbage collection's ledger of unreferenced objects

Every object but ``config``, locks and log entries is in the envelope of ``objects.py``. Any other key is
an unknown object (``layout.py``): skipped, reported, never deleted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
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
from genievm_core.logging import get_logger
from genievm_core.models.manifest import (
    CONFIG_FORMAT_VERSION,
    FORMAT_VERSION,
    BackupManifest,
    DiskRecord,
    RepositoryConfig,
    is_backup_id,
)
from genievm_core.plugin.protocols import StorageTarget
from genievm_core.repository.backup_log import BackupLog
from genievm_core.repository.config import check_tag, parse_config, seal_config
from genievm_core.repository.index import ChunkIndex
from genievm_core.repository.keys import Keys, WrongPassphrase, create_keys, rewrap_keys, unwrap_slot
from genievm_core.repository.known import KnownRepositories
from genievm_core.repository.layout import is_known_key, unknown_keys
from genievm_core.repository.lock import HeldLock, LockPolicy, read_lock, repository_lock
from genievm_core.repository.objects import ZERO_ID, EncryptionMismatch, ObjectCodec, ObjectDamaged
from genievm_core.repository.patches import PATCHED_CHUNKS, PatchRef, Span, apply_patch

__all__ = ["DEFAULT_CHUNK_SIZE", "Repository", "new_backup_id"]

DEFAULT_CHUNK_SIZE = 4 << 20
MAX_MANIFEST = 16 << 20
PassphraseSource = Callable[[], str]
Damaged = tuple[str, RepositoryError]
INIT_FEATURES = (PATCHED_CHUNKS,)  # what a new repository has; `repo upgrade` adds them to an old one

log = get_logger("genievm.repository")


class _Downgraded(CorruptionError):
    """An encrypted object in a repository whose config says it is unencrypted: an attack, not damage."""


def new_backup_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ-") + uuid.uuid4().hex[:8]


class Repository:
    """An open repository. Create with ``Repository.init`` or ``Repository.open``."""

    def __init__(self, storage: StorageTarget, config: RepositoryConfig, codec: ObjectCodec) -> None:
        self.storage = storage
        self.config = config
        self.codec = codec
        self.warnings: list[str] = []  # for the user, once: set by ``open``
        self.on_warning: Callable[[str], None] = lambda text: log.warning("repository.warning", warning=text)
        self.locking = LockPolicy()  # waiting, staleness and heartbeat of the locks it takes
        self._held: list[HeldLock] = []  # the locks held now, checked before each write
        self.known: KnownRepositories | None = None  # this client's memory of repositories: set by ``open``
        self.backup_log = BackupLog(storage, codec.keys)
        self.key_slot: int | None = None  # which key slot the passphrase opened (None: a key file, or none)
        self._patched: dict[bytes, tuple[PatchRef, ...]] = {}  # chunk id -> its bases and patches, newest first

    @property
    def url(self) -> str:
        return self.storage.url

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @property
    def patches_allowed(self) -> bool:
        """Whether a backup may store a chunk as a patch over another (the feature ``patched-chunks``)."""
        return PATCHED_CHUNKS in self.config.features

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
                features=INIT_FEATURES,
            )
        except ValidationError as exc:
            raise ConfigError(f"cannot create repository: {_first(exc)}") from exc
        config, blob = seal_config(config, keys)
        storage.put("config", blob)
        return cls(storage, config, ObjectCodec(keys))

    @classmethod
    def open(
        cls,
        storage: StorageTarget,
        *,
        passphrase: PassphraseSource | None = None,
        compression_level: int = 3,
        expect_encrypted: bool = False,
        known: KnownRepositories | None = None,
        key_file: tuple[str, Keys] | None = None,
    ) -> Repository:
        """Open a repository, checking its config before anything is read or written.

        ``expect_encrypted`` (a passphrase was given) refuses a config that claims
        to be unencrypted; ``known`` refuses one weaker than this client saw last
        time, and remembers this one. ``warnings`` lists what the caller should
        tell the user once (an unencrypted repository, a format-1 config). ``key_file`` (a repository id
        and its keys, ``keys_of_file``) opens it instead of a passphrase.
        """
        try:
            raw = storage.get("config")
        except ObjectNotFoundError:
            raise RepositoryNotFoundError(
                f"no GenieVM repository at {storage.url} (create one with `genievm repo init`)"
            ) from None
        config, data = parse_config(storage.url, raw)
        if known is not None:
            known.check(storage.url, config)
        keys, slot = None, None
        warnings = []
        if config.encryption is None:
            if expect_encrypted:
                raise CorruptionError(
                    f"repository {storage.url} says it is not encrypted, but a passphrase was given: its config "
                    "may have been replaced to turn encryption off; refusing (for a repository created with "
                    "--encryption none, give no passphrase)"
                )
            warnings.append(f"repository {storage.url} is not encrypted")
        elif key_file is not None:
            if key_file[0] != config.repository_id:
                raise WrongPassphraseError(
                    f"the key file is of repository {key_file[0]}, not of {storage.url} ({config.repository_id})"
                )
            keys = key_file[1]
            check_tag(storage.url, data, config, keys)
        else:
            keys, slot = _unwrap(storage.url, config, passphrase)
            check_tag(storage.url, data, config, keys)
        if config.format_version < CONFIG_FORMAT_VERSION:
            warnings.append(
                f"repository {storage.url} has a config of format {config.format_version}, which is not "
                "authenticated: run `genievm repo upgrade`"
            )
        if known is not None:
            known.remember(storage.url, config)
        repo = cls(storage, config, ObjectCodec(keys, compression_level=compression_level))
        repo.warnings = warnings
        repo.known = known
        repo.key_slot = slot
        return repo

    def upgrade(self, passphrase: PassphraseSource | None) -> bool:
        """Bring the config to what ``init`` writes now: a format-1 config as format 2 (authenticated; the key
        wrapped anew for NFC passphrases), and the feature ``patched-chunks`` (older readers then refuse the
        repository in one line).

        Returns False when the config is already current. The caller holds the exclusive lock.
        """
        config = self.config
        missing = tuple(f for f in INIT_FEATURES if f not in config.features)
        if config.format_version >= CONFIG_FORMAT_VERSION and not missing:
            return False
        if config.format_version < CONFIG_FORMAT_VERSION and self.codec.keys is not None:
            assert passphrase is not None and config.encryption is not None  # open() needed both
            record = rewrap_keys(passphrase(), self.codec.keys, scrypt_n=config.encryption.kdf.n)
            config = config.model_copy(update={"encryption": record})
        config = config.model_copy(update={"features": (*config.features, *missing)})
        config, blob = seal_config(config, self.codec.keys)
        self.storage.put("config", blob)
        self.config = config
        return True

    lock_reads = True  # False (``--no-lock``): read_lock takes no lock

    def read_lock(self, operation: str) -> AbstractContextManager[None]:
        """The shared lock of a command that only reads; none, with a warning, when ``lock_reads`` is off or
        the storage refuses writes (``genievm_core.repository.lock.read_lock``)."""
        return self._holding(
            read_lock(self.storage, operation, take=self.lock_reads, timeout=self.locking.wait, policy=self.locking)
        )

    def lock(
        self,
        kind: Literal["shared", "exclusive"],
        operation: str,
        *,
        timeout: float | None = None,
        checkpoint: Callable[[], None] | None = None,
    ) -> AbstractContextManager[None]:
        """Hold a lock for the block, refreshed meanwhile; wait up to ``timeout`` seconds (default
        ``locking.wait``) for a conflicting one to go, calling ``checkpoint`` (a job's cancel) meanwhile."""
        wait = self.locking.wait if timeout is None else timeout
        return self._holding(
            repository_lock(self.storage, kind, operation, timeout=wait, policy=self.locking, checkpoint=checkpoint)
        )

    @contextmanager
    def _holding(self, lock: AbstractContextManager[HeldLock | None]) -> Iterator[None]:
        with lock as held:
            if held is not None:
                self._held.append(held)
            try:
                yield
            finally:
                if held is not None:
                    self._held.remove(held)

    def check_locks(self) -> None:
        """Raise ``LockLostError`` when a lock held for this repository is lost (not refreshed, or removed)."""
        for held in list(self._held):
            held.check()

    # chunks

    @staticmethod
    def chunk_key(chunk_id: bytes) -> str:
        hexid = chunk_id.hex()
        return f"chunks/{hexid[:2]}/{hexid}"

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the chunk can be read: stored under its id, or, patched, its base and patch are."""
        for ref in self._patched.get(chunk_id, ()):
            if self.has_object(ref.patch) and (ref.base == ZERO_ID or self.has_object(ref.base)):
                return True
        return self.has_object(chunk_id)

    def has_object(self, chunk_id: bytes) -> bool:
        """Whether a chunk is stored under its id (a patched chunk is not)."""
        return self.storage.exists(self.chunk_key(chunk_id))

    def patch_of(self, chunk_id: bytes) -> PatchRef | None:
        """The base and patch of a patched chunk named by an index read or written here; None for others."""
        refs = self._patched.get(chunk_id)
        return refs[0] if refs else None

    def add_patched(self, chunk_id: bytes, ref: PatchRef) -> None:
        """Note a patched chunk of an index read here, or of a backup's (its patch stored): it comes first."""
        refs = self._patched.get(chunk_id, ())
        if not refs or refs[0] != ref:
            self._patched[chunk_id] = (ref, *(r for r in refs if r != ref))

    def put_chunk(self, chunk_id: bytes, data: bytes, *, batched: bool = True) -> int:
        """Store a chunk; return the bytes written.

        A target that offers ``put_batched`` (the filesystem) makes chunks durable
        in batches: such a chunk is certain to be stored only after ``flush_chunks``.
        ``batched=False``: durable at once (``repo copy``, so a killed run loses none it sent).
        """
        blob = self.codec.encode(chunk_id.hex(), data)
        self.check_locks()
        put = (getattr(self.storage, "put_batched", None) if batched else None) or self.storage.put
        put(self.chunk_key(chunk_id), blob)
        return len(blob)

    def flush_chunks(self) -> None:
        """Make every chunk put so far durable (and visible): before an index names them."""
        flush = getattr(self.storage, "flush", None)
        if flush is not None:
            flush()

    def get_chunk(self, chunk_id: bytes, *, check_content: bool = True) -> bytes:
        """A chunk's bytes; ``check_content=False`` (a restore) trusts an encrypted chunk's tag alone.

        A patched chunk (named by an index read here) is its base with its patch written over it; its id
        is checked as any chunk's: the base's and the patch's tags, and the index's, authenticate it where
        encrypted.
        """
        refs = self._patched.get(chunk_id)
        if not refs:
            return self._get_object(chunk_id, check_content)
        first: CorruptionError | None = None
        for ref in refs:  # another index's base and patch of the same content, if this process read one
            try:
                return self.patched_content(chunk_id, ref, check_content=check_content)[0]
            except CorruptionError as exc:
                first = first or exc
        if self.has_object(chunk_id):  # stored whole too, where an index names it so
            return self._get_object(chunk_id, check_content)
        assert first is not None
        raise first

    def patched_content(self, chunk_id: bytes, ref: PatchRef, *, check_content: bool) -> tuple[bytes, list[Span]]:
        """The content of ``chunk_id`` made of ``ref``'s base and patch, and the spans where it differs from the
        base; checked as ``get_chunk`` checks."""
        patch = self._get_object(ref.patch, check_content)
        base = None if ref.base == ZERO_ID else self._get_object(ref.base, check_content)
        try:
            data, spans = apply_patch(base, patch)
        except ObjectDamaged as exc:
            raise CorruptionError(f"chunk {chunk_id.hex()} is corrupt: its patch {ref.patch.hex()}: {exc}") from None
        if (check_content or self.codec.keys is None) and self.codec.chunk_id(data) != chunk_id:
            raise CorruptionError(f"chunk {chunk_id.hex()} is corrupt: its base and patch do not make its content")
        return data, spans

    def _get_object(self, chunk_id: bytes, check_content: bool) -> bytes:
        key = self.chunk_key(chunk_id)
        self.check_locks()
        try:
            blob = self.storage.get(key)
        except ObjectNotFoundError:
            raise CorruptionError(f"chunk {chunk_id.hex()} is missing") from None
        try:
            return self.codec.decode_chunk(chunk_id, blob, check_content=check_content)
        except ObjectDamaged as exc:
            raise CorruptionError(f"chunk {chunk_id.hex()} is corrupt: {exc}") from None

    # indexes

    def put_index(self, backup_id: str, disk: str, index: ChunkIndex) -> str:
        key = f"indexes/{backup_id}/{disk}"
        self.flush_chunks()  # an index never names a chunk that is not durable
        self.check_locks()
        self.storage.put(key, self.codec.encode(key, index.to_bytes()))
        return key

    def get_index(self, key: str) -> ChunkIndex:
        try:
            index = ChunkIndex.from_bytes(self.codec.decode(key, self.storage.get(key)))
        except ObjectNotFoundError:
            raise CorruptionError(f"index {key} is missing") from None
        except ObjectDamaged as exc:
            raise CorruptionError(f"index {key} is corrupt: {exc}") from None
        for i, ref in index.patches.items():
            self.add_patched(index[i], ref)
        return index

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
        """Commit a backup: its manifest, then its entry in the backup log (a crash between the two leaves a
        backup the log does not list, never a listed one that is missing)."""
        key = f"manifests/{manifest.backup_id}"
        self.check_locks()
        blob = self.codec.encode(key, manifest.model_dump_json(indent=1).encode())
        self.storage.put(key, blob)
        self._log("backup", manifest.backup_id, hashlib.sha256(blob).hexdigest())

    def forget(self, backup_id: str) -> None:
        """Delete a backup on purpose: its ``forget`` entry in the backup log, then its manifest (if still there).

        Raises ``ObjectLockedError`` when the store refuses the delete (the entry stays: harmless)."""
        self.check_locks()
        self._log("forget", backup_id)
        self.storage.delete(f"manifests/{backup_id}")

    def log_unlisted(self) -> int:
        """Enter in the backup log every backup it lacks (those made before it existed); return how many."""
        state = self.backup_log.read()
        entered = {e.backup_id for e in state.entries}
        unlisted = [b for b in self.backup_ids() if b not in entered]
        for backup_id in unlisted:
            blob = self.storage.get(f"manifests/{backup_id}")  # as it is now: its own checks still apply
            self._log("backup", backup_id, hashlib.sha256(blob).hexdigest())
        return len(unlisted)

    def _log(self, event: Literal["backup", "forget"], backup_id: str, manifest: str | None = None) -> None:
        entry = self.backup_log.append(event, backup_id, new_backup_id(), manifest)
        if self.known is not None:  # what this client wrote last must still be there when it next looks
            self.known.remember_log(self.url, self.config, {entry.entry_id: backup_id})

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
        except EncryptionMismatch:
            if self.config.encryption is None:  # never skipped as one damaged manifest: see _Downgraded
                raise _Downgraded(
                    f"repository {self.url} says it is not encrypted, but its backup {backup_id} is: its config "
                    "was replaced to turn encryption off; refusing"
                ) from None
            raise CorruptionError(f"manifest {backup_id} is corrupt: it is not encrypted") from None
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
        # last: what is not even a manifest is named by its own defect, and the log is read only for a manifest
        digest = self.backup_log.manifest_digest(backup_id)
        if digest is not None and not hmac.compare_digest(digest, hashlib.sha256(blob).hexdigest()):
            raise CorruptionError(
                f"manifest {backup_id} is corrupt or altered: it does not match the digest in its backup-log entry"
            )
        return manifest

    def warn(self, text: str) -> None:
        """Tell the user of something found while working (``on_warning``: the client's, or the log)."""
        self.on_warning(text)

    def backup_ids(self) -> list[str]:
        """The ids of the manifests; an object under ``manifests/`` that is no backup's is skipped, with a warning."""
        keys = list(self.storage.list("manifests/"))
        for key in unknown_keys(keys):
            self.warn(f"repository {self.url}: {key} is not a GenieVM object; skipped (see genievm verify)")
        return sorted(key.removeprefix("manifests/") for key in keys if is_known_key(key))

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
                if damaged is None or isinstance(exc, _Downgraded):
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


def _unwrap(url: str, config: RepositoryConfig, passphrase: PassphraseSource | None) -> tuple[Keys, int]:
    assert config.encryption is not None
    if passphrase is None:
        raise PassphraseRequiredError(f"repository {url} is encrypted: set GENIEVM_PASSPHRASE or --passphrase-file")
    try:  # format 1 took the passphrase as given; format 2 normalises it to NFC
        return unwrap_slot(passphrase(), config.encryption, normalize=config.format_version >= 2)
    except WrongPassphrase:
        raise WrongPassphraseError(f"wrong passphrase for repository {url}") from None


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return ".".join(str(p) for p in err["loc"]) + ": " + err["msg"]
