"""The VM's files besides its disks (UEFI NVRAM, vTPM state): from a backup session into the manifest, and back.

They are small, so the manifest holds them whole (base64, with their BLAKE3): they are committed,
encrypted and deleted with it, and no other object or garbage collection is involved.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import blake3

from genievm_core.errors import CorruptionError, ProviderError
from genievm_core.models.manifest import MAX_VM_FILE, BackupManifest, VMFileRecord, is_safe_name
from genievm_core.plugin.protocols import BackupSession, OffersVMFiles

__all__ = ["session_files", "stored_files"]


def session_files(session: BackupSession, provider: str, vm: str) -> tuple[VMFileRecord, ...]:
    """The records of the files the session offers (``OffersVMFiles``); none when it offers none."""
    if not isinstance(session, OffersVMFiles):
        return ()
    records = []
    for name, data in sorted(session.vm_files().items()):
        if not is_safe_name(name):
            raise ProviderError(f"provider {provider}: VM {vm} has a file named {name!r} (letters, digits, . _ @ + -)")
        if len(data) > MAX_VM_FILE:
            raise ProviderError(
                f"provider {provider}: VM {vm}: file {name} is {len(data)} bytes, more than the {MAX_VM_FILE} kept"
            )
        records.append(
            VMFileRecord(
                name=name,
                size=len(data),
                checksum=blake3.blake3(data).hexdigest(),
                data=base64.b64encode(data).decode(),
            )
        )
    return tuple(records)


def stored_files(manifest: BackupManifest) -> Mapping[str, bytes]:
    """The VM files of a backup, each checked against its size and checksum."""
    files = {}
    for record in manifest.vm.files:
        data = base64.b64decode(record.data, validate=True) if record.data else b""
        if len(data) != record.size or blake3.blake3(data).hexdigest() != record.checksum:
            raise CorruptionError(
                f"manifest {manifest.backup_id} is corrupt: VM file {record.name} does not match its checksum"
            )
        files[record.name] = data
    return files
