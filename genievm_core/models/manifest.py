"""Repository metadata: the repository's config object and backup manifests.

Both are JSON documents validated by pydantic; docs/repository-format.md
describes every field. Names that end up in object keys or file names (VM ids,
disk names, backup ids) are checked here, so a hostile manifest cannot steer a
restore outside its target.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "CONFIG_FORMAT_VERSION",
    "FORMAT_VERSION",
    "ConfigAuthentication",
    "BackupManifest",
    "BackupStats",
    "CBTRecord",
    "DiskRecord",
    "EncryptionRecord",
    "KDFRecord",
    "KeySlot",
    "MAX_VM_FILE",
    "RepositoryConfig",
    "VMFileRecord",
    "VMRecord",
]

FORMAT_VERSION = 1  # of manifests
CONFIG_FORMAT_VERSION = 2  # of the repository's config: 2 added its authentication and NFC passphrases
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")
_BACKUP_ID = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{8}\Z")
MAX_DISK_SIZE = 1 << 50  # 1 PiB: anything larger in a manifest is hostile or corrupt
MAX_VM_FILE = 4 << 20  # a VM file (NVRAM, vTPM state) is kept in the manifest: OVMF's largest is 4 MiB


def is_backup_id(value: str) -> bool:
    """True for ``YYYYMMDDTHHMMSS.ffffffZ-xxxxxxxx``: UTC start time, microseconds, 8 random hex digits."""
    return bool(_BACKUP_ID.match(value))


def is_safe_name(value: str) -> bool:
    """True for a name that is safe as a file name and object key: letters, digits, ``. _ @ + -``."""
    return bool(_SAFE_NAME.match(value)) and value not in (".", "..")


def _display_name(value: str) -> str:
    """A VM's name: free text, but never a path (providers put it in file names: ``<name>-<disk>.qcow2``)."""
    if (
        not value
        or len(value) > 255
        or value in (".", "..")
        or any(c in value for c in "/\\")
        or not value.isprintable()
    ):
        raise ValueError(f"{value!r} is not a VM name (1 to 255 printable characters, no / or \\, not . or ..)")
    return value


def _safe(value: str) -> str:
    if not is_safe_name(value):
        raise ValueError(f"{value!r} is not a safe name (letters, digits, . _ @ + -)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KDFRecord(_Strict):
    name: Literal["scrypt"] = "scrypt"
    salt: str  # base64
    n: int = Field(ge=1024, le=1 << 22)
    r: int = Field(ge=1, le=32)
    p: int = Field(ge=1, le=16)


class KeySlot(_Strict):
    """One passphrase's copy of the master key (docs/repository-format.md, "Keys")."""

    kdf: KDFRecord
    wrapped_key: str  # base64(nonce 12 | AES-GCM(master key 32 bytes) | tag 16)
    label: str | None = Field(default=None, min_length=1, max_length=100)  # whose passphrase, for `repo key list`
    added_at: datetime | None = None


class EncryptionRecord(KeySlot):
    """The first key slot, and ``more_keys``: the same master key wrapped by further passphrases."""

    algorithm: Literal["aes-256-gcm"] = "aes-256-gcm"
    more_keys: tuple[KeySlot, ...] = Field(default=(), max_length=64)

    @property
    def slots(self) -> tuple[KeySlot, ...]:
        """Every key slot, the first one first."""
        first = KeySlot(kdf=self.kdf, wrapped_key=self.wrapped_key, label=self.label, added_at=self.added_at)
        return (first, *self.more_keys)


class ConfigAuthentication(_Strict):
    """What binds a format-2 config to its repository (docs/repository-format.md, "Authentication")."""

    checksum: str = Field(pattern=r"^[0-9a-f]{64}$")  # SHA-256 of the canonical form: catches damage
    tag: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")  # HMAC-SHA256 under config_key


class RepositoryConfig(_Strict):
    """The object ``config`` at the root of a repository. Never encrypted; authenticated from format 2."""

    format_version: int = CONFIG_FORMAT_VERSION
    repository_id: str
    created_at: datetime
    chunk_size: int
    compression: Literal["zstd"] = "zstd"
    chunk_id: Literal["blake3", "blake3-keyed"]
    encryption: EncryptionRecord | None = None
    features: tuple[str, ...] = ()
    authentication: ConfigAuthentication | None = None

    @field_validator("chunk_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value < 4096 or value > (1 << 26) or value & (value - 1):
            raise ValueError("chunk_size must be a power of two from 4 KiB to 64 MiB")
        return value


class CBTRecord(_Strict):
    """How a disk's changed data was found, and the token for next time."""

    mode: Literal["full", "cbt", "hash-compare"]
    source: str | None = None  # which CBT source was used, when mode is "cbt"
    reason: str | None = None  # why the backup fell back, when it did
    token: str | None = None  # the CBT token to pass to the next backup


class BackupStats(_Strict):
    bytes_scanned: int = 0  # disk bytes covered by the chunks examined
    bytes_read: int = 0  # bytes read from the source (holes are not read)
    bytes_new: int = 0  # plaintext bytes of chunks stored by this backup
    bytes_stored: int = 0  # bytes written to storage for those chunks
    bytes_deduplicated: int = 0  # plaintext bytes of chunks that were already stored
    bytes_zero: int = 0  # bytes of all-zero chunks (not stored)
    chunks_new: int = 0
    chunks_deduplicated: int = 0
    chunks_zero: int = 0
    chunks_unchanged: int = 0  # taken from the parent without reading


class DiskRecord(_Strict):
    name: str
    size: int = Field(ge=0, le=MAX_DISK_SIZE)
    chunk_size: int
    chunk_count: int = Field(ge=0)
    index: str  # object key of the binary chunk index
    checksum: str  # hex BLAKE3 of the index entries (see docs/repository-format.md)
    format: str = "raw"  # the disk's format on the hypervisor (raw, qcow2, vmdk)
    cbt: CBTRecord
    stats: BackupStats = BackupStats()

    _name = field_validator("name")(_safe)


class VMFileRecord(_Strict):
    """One of the VM's files besides its disks (UEFI NVRAM, vTPM state), kept whole in the manifest."""

    name: str
    size: int = Field(ge=0, le=MAX_VM_FILE)
    checksum: str = Field(pattern=r"^[0-9a-f]{64}$")  # hex BLAKE3 (unkeyed) of the content
    data: str  # base64 of the content

    _name = field_validator("name")(_safe)


class VMRecord(_Strict):
    id: str
    name: str
    provider: str
    config: str | None = None  # base64 of the provider's opaque configuration blob
    config_format: str | None = None  # "libvirt-xml", "vmx-json", "image-json", ...
    summary: dict[str, str | int | float | bool | None] = {}
    files: tuple[VMFileRecord, ...] = ()  # the VM's files besides its disks (NVRAM, vTPM state)

    _id = field_validator("id")(_safe)
    _name = field_validator("name")(_display_name)

    @field_validator("files")
    @classmethod
    def _files_once(cls, value: tuple[VMFileRecord, ...]) -> tuple[VMFileRecord, ...]:
        names = [f.name for f in value]
        if len(set(names)) != len(names):
            raise ValueError(f"a VM file name appears twice: {sorted(names)}")
        return value


class BackupManifest(_Strict):
    format_version: int = FORMAT_VERSION
    backup_id: str
    repository_id: str
    vm: VMRecord
    kind: Literal["full", "incremental"]
    parent_id: str | None = None
    started_at: datetime
    finished_at: datetime
    disks: tuple[DiskRecord, ...]
    stats: BackupStats = BackupStats()
    tags: dict[str, str] = {}

    @field_validator("backup_id", "parent_id")
    @classmethod
    def _backup_id(cls, value: str | None) -> str | None:
        if value is not None and not is_backup_id(value):
            raise ValueError(f"{value!r} is not a backup id")
        return value

    @model_validator(mode="after")
    def _disks_are_this_backups(self) -> BackupManifest:
        """Each disk once, each with its own index of this backup (never another object, nor one outside)."""
        names = [d.name for d in self.disks]
        if len(set(names)) != len(names):
            raise ValueError(f"a disk name appears twice: {sorted(names)}")
        for disk in self.disks:
            if disk.index != f"indexes/{self.backup_id}/{disk.name}":
                raise ValueError(f"disk {disk.name}: index {disk.index!r} is not this backup's index of it")
        return self
