"""The contracts plugins implement: small protocols made of primitives.

The engine owns concurrency, chunking, hashing, compression, encryption and
manifests; a plugin only moves bytes and describes what it has. Every method
may raise a subclass of ``genievm_core.errors.GenieVMError``; wrap SDK errors
with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from genievm_core.models.config import DiskConfig
from genievm_core.models.extents import Extent
from genievm_core.models.manifest import BackupManifest, DiskRecord
from genievm_core.models.vm import DiskInfo, VMDescription, VMRef

__all__ = [
    "BackupRequest",
    "BackupSession",
    "BoundCBTSource",
    "CBTSource",
    "ChangedExtents",
    "DiskSink",
    "DiskSource",
    "OffersCBTSources",
    "OffersVMFiles",
    "ReadsConcurrently",
    "Problem",
    "Provider",
    "ProviderFactory",
    "RepositoryReader",
    "RestoreRequest",
    "RestoreSession",
    "StorageFactory",
    "StorageTarget",
    "Verifier",
    "VerifierWithOptions",
    "VerifyReport",
]


@dataclass(frozen=True)
class ChangedExtents:
    """What changed on a disk since a token.

    ``extents`` is None when changes are not available (no token, CBT off,
    token rejected); ``reason`` then says why, and the engine falls back to
    reading allocated data and comparing chunk ids with the parent's index.
    """

    extents: list[Extent] | None
    source: str | None = None
    reason: str | None = None

    @classmethod
    def unavailable(cls, reason: str) -> ChangedExtents:
        return cls(None, None, reason)


@runtime_checkable
class DiskSource(Protocol):
    """One disk at the backup's point in time, read-only.

    ``read`` is called from one thread per disk, sequentially by offset (unless the source says it
    ``ReadsConcurrently``).
    """

    @property
    def info(self) -> DiskInfo: ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` (never past ``info.size``)."""

    def allocated_extents(self) -> Iterable[Extent] | None:
        """Extents that may hold data; holes outside them read as zeros and are never read.

        None when the source cannot tell: then the whole disk is read.
        """

    def changed_extents(self, token: str | None) -> ChangedExtents:
        """Extents written since the backup that returned ``token`` from ``next_token``.

        Asked only when no CBT source supports the disk (the core chooses one first: see
        ``CBTSource`` and ``OffersCBTSources``).
        """

    def next_token(self) -> str | None:
        """The token to store in the manifest and pass to the next backup, or None."""


@runtime_checkable
class ReadsConcurrently(Protocol):
    """What a ``DiskSource`` may also declare (since 0.5): ``concurrent_reads = True`` when its ``read`` may
    be called from several threads at once and out of order (positional reads of a file or device).

    The engine then reads each chunk on the worker that hashes and stores it, instead of on the disk's
    one thread; reads still come in ascending order within a window of a few chunks. Without it (or
    with False), reads stay on one thread, in order.
    """

    concurrent_reads: bool


@dataclass(frozen=True)
class BackupRequest:
    """What the core asks of a provider for one backup."""

    disks: tuple[str, ...]  # names of the disks to back up (exclusions already applied)
    tokens: Mapping[str, str | None] = field(default_factory=dict)  # parent's CBT tokens
    enable_cbt: bool = True
    quiesce: bool = False
    workdir: Path | None = None  # where sockets and temporary files may go
    chain_id: str = ""  # identifies the repository, so CBT names of two repositories never collide


class BackupSession(Protocol):
    """A consistent point in time of a VM, open for reading."""

    def sources(self) -> Mapping[str, DiskSource]:
        """One disk source per requested disk name."""


@runtime_checkable
class OffersVMFiles(Protocol):
    """What a ``BackupSession`` may also implement (since 0.4): the VM's small files besides its disks.

    A UEFI VM's NVRAM (its EFI variables, its boot entries) or a virtual TPM's state belong to the
    VM: restored without them it may not boot. ``vm_files`` returns them by name (letters, digits
    and ``. _ @ + -``, at most ``MAX_VM_FILE`` bytes each), read at the backup's point in time; the
    core stores them in the manifest and hands them back to ``open_restore`` in ``RestoreRequest.files``.
    """

    def vm_files(self) -> Mapping[str, bytes]: ...


@dataclass(frozen=True)
class RestoreRequest:
    """Where and how a provider restores a VM."""

    restore_path: Path | None
    new_name: str | None = None
    force: bool = False
    disk_configs: Mapping[str, DiskConfig] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)  # since 0.4: what the backup's ``vm_files`` returned


class DiskSink(Protocol):
    """A disk being restored."""

    @property
    def zeroed(self) -> bool:
        """True when unwritten ranges read as zeros (a new sparse file): zero chunks are skipped."""

    def write(self, offset: int, data: bytes) -> None: ...

    def read(self, offset: int, length: int) -> bytes:
        """Read back what was written, for verify-after-restore."""

    def close(self) -> None: ...


class RestoreSession(Protocol):
    """A VM being created. Leaving the context with an error removes what was created."""

    def open_sink(self, disk: DiskInfo, config: DiskConfig) -> DiskSink: ...

    def commit(self) -> str:
        """Make the restored VM real (define it); return its id. Called once all disks are written."""


class Provider(Protocol):
    """A connection to one hypervisor (or, for ``image``, to a set of disk images)."""

    name: str

    def list_vms(self) -> list[VMRef]: ...

    def describe_vm(self, vm_id: str) -> VMDescription:
        """Raise VMNotFoundError when there is no such VM."""

    def open_backup(self, vm: VMDescription, request: BackupRequest) -> AbstractContextManager[BackupSession]:
        """Create the point in time (snapshot, backup job, ...) and always remove it on exit."""

    def open_restore(self, vm: VMDescription, request: RestoreRequest) -> AbstractContextManager[RestoreSession]:
        """Prepare a new VM from a stored description; never overwrite without ``request.force``."""

    def power_on(self, vm_id: str) -> None: ...

    def close(self) -> None: ...


class ProviderFactory(Protocol):
    def __call__(self, options: Mapping[str, Any]) -> Provider: ...


class CBTSource(Protocol):
    """A way of finding a disk's changed extents (qcow2 bitmaps, thin_delta, vSphere CBT).

    During a backup the core chooses one per disk: among the registered sources (and those the
    disk source offers, see ``OffersCBTSources``) whose ``supports(disk)`` is true, the one of
    highest ``priority``; it calls ``changed_extents`` with the open disk source's ``info`` and
    the parent's token. A ``CBTError`` or an answer "not available" makes the backup compare
    chunk ids with the parent's index instead, with the reason in the manifest.
    """

    name: str
    priority: int  # higher is tried first

    def supports(self, disk: DiskInfo) -> bool: ...

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents: ...


@runtime_checkable
class OffersCBTSources(Protocol):
    """What a ``DiskSource`` may also implement (since 0.2): CBT sources bound to its point in time.

    A CBT source that needs the backup's live handle (an NBD export's dirty bitmap, a vSphere
    snapshot) cannot work from a ``DiskInfo`` alone; the disk source offers it bound to that
    handle. An offered source takes the place of the registered source of the same name for
    this disk (same tracking, answered from the point in time), and one of a new name competes
    with the registered ones by priority and ``supports``.
    """

    def cbt_sources(self) -> Sequence[CBTSource]: ...


class BoundCBTSource:
    """A registered CBT source bound to one backup (since 0.2): its name, priority and ``supports``,
    answered by ``answer(token)``, which reads the backup's point in time.

    What an ``OffersCBTSources.cbt_sources`` usually returns:
    ``[BoundCBTSource(REGISTERED, self.changed_extents)]``.
    """

    def __init__(self, registered: CBTSource, answer: Callable[[str | None], ChangedExtents]) -> None:
        self.name = registered.name
        self.priority = registered.priority
        self.registered = registered
        self.answer = answer

    def supports(self, disk: DiskInfo) -> bool:
        return self.registered.supports(disk)

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        return self.answer(token)


class StorageTarget(Protocol):
    """Where repository objects live. Keys are ``/``-separated ASCII paths.

    Locks, garbage collection and everything else are the core's. The core
    retries transient ``StorageError``s (with an OS or SDK cause) with backoff,
    unless the target sets ``retries_itself = True`` because it already does.
    """

    url: str

    def put(self, key: str, data: bytes | bytearray) -> None:
        """Store ``data`` atomically: readers see the whole object or none.

        A target for which durability costs per object (a filesystem's fsyncs) may
        also offer ``put_batched(key, data)`` and ``flush()``: the core then puts
        chunks through ``put_batched`` and calls ``flush()`` before it writes an
        index that names them. An object put so must become visible only once it
        is durable (at the latest when ``flush()`` returns), and ``flush()`` raises
        the error of any that could not be made durable.
        """

    def get(self, key: str) -> bytes:
        """Raise ObjectNotFoundError when absent."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]:
        """Every key that starts with ``prefix``, in any order."""

    def delete(self, key: str) -> None:
        """Remove ``key``; absent keys are not an error.

        Raise ObjectLockedError when the store's retention (e.g. S3 Object Lock)
        forbids removing it yet; garbage collection reports such keys and goes on.

        A target may also offer ``delete_many(keys) -> dict[str, StorageError]``
        (the keys it could not remove, with their errors); garbage collection
        then deletes in batches through it.

        A target whose puts can leave debris when the process is killed midway
        (a filesystem's temporary files) may offer ``remove_leftovers(in_flight) -> list[str]``:
        remove such leftovers and return what it removed. Garbage collection calls it
        under the exclusive lock, when no other process writes objects, except lock
        objects: under the prefixes ``in_flight`` (``locks/``) only leftovers older
        than a minute go.
        """

    def close(self) -> None: ...


class StorageFactory(Protocol):
    def __call__(self, url: str, options: Mapping[str, Any]) -> StorageTarget: ...


@dataclass(frozen=True)
class Problem:
    disk: str | None
    detail: str
    chunk_index: int | None = None


@dataclass
class VerifyReport:
    verifier: str
    backup_id: str
    checked: int = 0  # objects or chunks checked
    problems: list[Problem] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # since 0.3: what else it found (JSON-able), for reports

    @property
    def ok(self) -> bool:
        return not self.problems


class RepositoryReader(Protocol):
    """What a verifier may read of a repository; the core passes its own, read-only to verifiers.

    Chunk ids are the 32-byte ids of the repository format; ``ZERO_ID``
    (32 zero bytes) in an index stands for a chunk that is all zeros and not stored.
    """

    @property
    def chunk_size(self) -> int:
        """The repository's chunk size in bytes."""

    def disk_index(self, disk: DiskRecord) -> Iterable[bytes]:
        """The chunk ids of one disk of a manifest, in disk order, one per chunk.

        Raise CorruptionError when the index is missing, corrupt, or does not
        fit the disk's size, chunk size and checksum in the manifest.
        """

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the chunk is stored (without reading it)."""

    def get_chunk(self, chunk_id: bytes) -> bytes:
        """The chunk's content, its id checked; raise CorruptionError when it is missing or corrupt."""


class Verifier(Protocol):
    name: str

    def verify(self, repository: RepositoryReader, manifest: BackupManifest) -> VerifyReport: ...


@runtime_checkable
class VerifierWithOptions(Protocol):
    """What a ``Verifier`` may also implement (since 0.3): a check run with options the user gives it
    (``verify --boot --boot-timeout 60`` passes ``{"timeout": 60.0}`` to the verifier ``boot``). The core
    calls ``verify_with`` instead of ``verify`` when it has options for the verifier."""

    def verify_with(
        self, repository: RepositoryReader, manifest: BackupManifest, options: Mapping[str, Any]
    ) -> VerifyReport: ...
