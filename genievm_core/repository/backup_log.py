"""The backup log: an append-only, authenticated record of every backup made and forgotten.

Anyone who can write the storage can delete a manifest: a rollback of the
repository to hide the newest backup, or an accident of a sync tool. The
manifests alone cannot show that one is gone; the log can. Each entry is
one object, ``log/<entry id>`` (the id sorts by time, as backup ids do),
written once and never changed or deleted, so concurrent writers (backups of
different VMs into one repository) never read, modify and write one shared
object and never lose each other's entries.

An entry (JSON) says ``event`` (``backup``: its manifest was committed;
``forget``: the backup was deleted on purpose, by prune or ``genievm backups
forget``), ``backup_id``, ``at`` and ``previous``: the entries that were the
newest ones (named by no other) when it was written, so an entry deleted from
the middle of the log leaves a name no object answers. ``authentication``
holds the SHA-256 ``checksum`` of its canonical form and, in an encrypted
repository, ``tag``: HMAC-SHA256 under a subkey of the master key. Without
the key no entry can be forged, changed or moved to another name. A ``backup``
entry also holds ``manifest``: the SHA-256 of the manifest object as stored, so
that a manifest changed after its commit is found even where nothing else
authenticates it (an unencrypted repository: one flipped bit can turn ``vm1``
into ``vm9``). Entries written before it existed have none; nothing is checked
for them.

In an unencrypted repository there is no key: the checksum catches damage
and accidents (a manifest deleted by a tool or a person), not an attacker,
who can write a ``forget`` entry of their own. The newest entry, deleted
together with its manifest, leaves no trace in the storage; the client's own
memory (``KnownRepositories``) of the entries it last saw catches that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from genievm_core.errors import ObjectNotFoundError
from genievm_core.models.manifest import is_backup_id
from genievm_core.plugin.protocols import StorageTarget
from genievm_core.repository.keys import Keys

__all__ = ["PREFIX", "BackupLog", "LogEntry", "LogState"]

PREFIX = "log/"
FORMAT_VERSION = 1
RECENT = 16  # entries read before an append, to find the newest ones it names as previous
MAX_ENTRY = 64 << 10
_DOMAIN = b"genievm backup-log v1\n"
Event = Literal["backup", "forget"]


@dataclass(frozen=True)
class LogEntry:
    entry_id: str
    event: Event
    backup_id: str
    at: str
    previous: tuple[str, ...]
    manifest: str | None = None  # SHA-256 (hex) of the committed manifest object, for a "backup" entry


@dataclass
class LogState:
    """The log as read by ``BackupLog.read``: the entries, and what is wrong with it."""

    entries: list[LogEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def listed(self) -> set[str]:
        """Backups the log says were made and not forgotten."""
        forgotten = {e.backup_id for e in self.entries if e.event == "forget"}
        return {e.backup_id for e in self.entries if e.event == "backup"} - forgotten

    @property
    def heads(self) -> list[str]:
        """The entries no other entry names: the newest ones."""
        named = {p for e in self.entries for p in e.previous}
        return sorted(e.entry_id for e in self.entries if e.entry_id not in named)


def _canonical(key: str, body: dict[str, Any]) -> bytes:
    return _DOMAIN + key.encode() + b"\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class BackupLog:
    """The log of one repository; ``keys`` None for an unencrypted one (checksums only)."""

    def __init__(self, storage: StorageTarget, keys: Keys | None) -> None:
        self.storage = storage
        self.keys = keys
        self._digests: dict[str, str] | None = None  # backup id -> manifest digest, read once
        self._newest = ""  # the newest entry id read into _digests

    def manifest_digest(self, backup_id: str) -> str | None:
        """The digest its ``backup`` entry recorded for ``backup_id``'s manifest; None if none did.

        The log is read once; again only for a backup newer than every entry read (committed since)."""
        if self._digests is None or (backup_id not in self._digests and backup_id > self._newest):
            state = self.read()
            self._digests = {e.backup_id: e.manifest for e in state.entries if e.event == "backup" and e.manifest}
            self._newest = max((e.entry_id for e in state.entries), default="")
        return self._digests.get(backup_id)

    def entry_ids(self) -> list[str]:
        return sorted(k.removeprefix(PREFIX) for k in self.storage.list(PREFIX) if is_backup_id(k.removeprefix(PREFIX)))

    def append(self, event: Event, backup_id: str, entry_id: str, manifest: str | None = None) -> LogEntry:
        """Write one entry; ``entry_id`` a new id (``new_backup_id()``), unique to this writer; ``manifest`` the
        digest of the backup's manifest object."""
        recent = [e for e in (self._read_one(i)[0] for i in self.entry_ids()[-RECENT:]) if e is not None]
        named = {p for e in recent for p in e.previous}
        previous = tuple(sorted(e.entry_id for e in recent if e.entry_id not in named))
        at = datetime.now(UTC).isoformat()
        body: dict[str, Any] = {"format_version": FORMAT_VERSION, "event": event, "backup_id": backup_id, "at": at,
                "previous": list(previous)}  # fmt: skip
        if manifest is not None:
            body["manifest"] = manifest
        key = PREFIX + entry_id
        canonical = _canonical(key, body)
        body["authentication"] = {"checksum": hashlib.sha256(canonical).hexdigest(), "tag": self._tag(canonical)}
        self.storage.put(key, json.dumps(body, indent=1).encode())
        if self._digests is not None and manifest is not None:
            self._digests[backup_id] = manifest
        return LogEntry(entry_id, event, backup_id, at, previous, manifest)

    def read(self) -> LogState:
        """Every entry, checked; entries that fail a check are problems, and so are names of missing ones."""
        state = LogState()
        for entry_id in self.entry_ids():
            entry, problem = self._read_one(entry_id)
            if entry is not None:
                state.entries.append(entry)
            elif problem:
                state.problems.append(problem)
        present = set(self.entry_ids())
        for missing in sorted({p for e in state.entries for p in e.previous} - present):
            state.problems.append(
                f"log entry {missing}, named by a later one, is gone: the backup log was cut (objects were deleted "
                "or the storage was rolled back)"
            )
        return state

    def missing(self, entry_ids: Iterable[str]) -> list[str]:
        """Those of ``entry_ids`` that are not in the log."""
        present = set(self.entry_ids())
        return sorted(set(entry_ids) - present)

    def _tag(self, canonical: bytes) -> str | None:
        return hmac.new(self.keys.log_key, canonical, hashlib.sha256).hexdigest() if self.keys else None

    def _read_one(self, entry_id: str) -> tuple[LogEntry | None, str | None]:
        key = PREFIX + entry_id
        try:
            raw = self.storage.get(key)
        except ObjectNotFoundError:
            return None, None  # listed, then gone: read() reports it when another entry names it
        try:
            if len(raw) > MAX_ENTRY:
                raise ValueError(f"larger than {MAX_ENTRY} bytes")
            body = json.loads(raw)
            auth = body.pop("authentication")
            canonical = _canonical(key, body)
            if not hmac.compare_digest(hashlib.sha256(canonical).hexdigest(), str(auth["checksum"])):
                return None, f"log entry {entry_id} is corrupt or altered: it does not match its checksum"
            tag = self._tag(canonical)
            if tag is not None and not hmac.compare_digest(tag, str(auth.get("tag"))):
                return None, f"log entry {entry_id} fails authentication: it was written by someone without the key"
            previous = tuple(str(p) for p in body["previous"])
            event, backup_id = body["event"], str(body["backup_id"])
            if body["format_version"] != FORMAT_VERSION or event not in ("backup", "forget"):
                raise ValueError(f"unknown format {body['format_version']} or event {event!r}")
            if not is_backup_id(backup_id):
                raise ValueError(f"{backup_id!r} is not a backup id")
            manifest = body.get("manifest")
            if manifest is not None and not (isinstance(manifest, str) and len(manifest) == 64):
                raise ValueError(f"manifest digest {manifest!r} is not a SHA-256")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            return None, f"log entry {entry_id} is corrupt: {exc}"
        return LogEntry(entry_id, event, backup_id, str(body["at"]), previous, manifest), None
