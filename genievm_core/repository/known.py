"""What this client remembers of the repositories it has opened, to refuse a downgrade.

A repository's ``config`` can be replaced by anyone who can write the
storage. A format-2 config of an encrypted repository is authenticated, but
a config that claims to be unencrypted has nothing to check it with. So, as
borg's security folder and restic's cache do, a client remembers for each
repository it opened (by id and by URL) whether it was encrypted and its
config's format, and refuses one that has lost its encryption or gone back
to format 1 since. The file is a small JSON object; a missing, unreadable or
unwritable file only loses the memory, never a backup.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from genievm_core.errors import CorruptionError
from genievm_core.models.manifest import RepositoryConfig

__all__ = ["KnownRepositories"]


class KnownRepositories:
    """The file ``path`` (``known-repositories.json`` beside the job registry, by default)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_bytes()[: 1 << 20])
        except (OSError, ValueError, RecursionError):
            return {}
        entries = data.get("repositories") if isinstance(data, dict) else None
        return {k: v for k, v in entries.items() if isinstance(v, dict)} if isinstance(entries, dict) else {}

    def check(self, url: str, config: RepositoryConfig) -> None:
        """Raise when ``config`` is weaker than what this client saw of the same repository before."""
        entries = self._load()
        seen = [entries[config.repository_id]] if config.repository_id in entries else []
        seen += [e for k, e in entries.items() if url in e.get("urls", ()) and k != config.repository_id]
        for entry in seen:
            if entry.get("encrypted") and config.encryption is None:
                raise CorruptionError(
                    f"repository {url} was encrypted when this client last opened it and its config now says "
                    f"it is not: refusing (if you re-created it unencrypted on purpose, remove its entry from "
                    f"{self.path})"
                )
            if int(entry.get("format_version", 1)) > config.format_version:
                raise CorruptionError(
                    f"repository {url} had an authenticated config (format {entry['format_version']}) when this "
                    f"client last opened it and now has format {config.format_version}: refusing (if you "
                    f"restored an old copy on purpose, remove its entry from {self.path})"
                )

    def remember(self, url: str, config: RepositoryConfig) -> None:
        """Record ``config`` as the state of the repository (best effort: never fails the caller)."""
        entries = self._load()
        old = entries.get(config.repository_id, {})
        entry = old | {
            "urls": sorted(set(old.get("urls", [])) | {url}),
            "encrypted": config.encryption is not None,
            "format_version": config.format_version,
        }
        if old != entry:
            self._save(url, config, entries, entry)

    def log_seen(self, config: RepositoryConfig) -> dict[str, str]:
        """The backup log entries (id → backup id) that were the newest when this client last wrote or
        verified the log."""
        heads = self._load().get(config.repository_id, {}).get("log_heads", {})
        return {str(k): str(v) for k, v in heads.items()} if isinstance(heads, dict) else {}

    def remember_log(self, url: str, config: RepositoryConfig, heads: dict[str, str]) -> None:
        """Record the newest entries of the repository's backup log (best effort)."""
        entries = self._load()
        old = entries.get(config.repository_id)
        if old is not None and old.get("log_heads") != heads:
            self._save(url, config, entries, old | {"log_heads": heads})

    def _save(
        self, url: str, config: RepositoryConfig, entries: dict[str, dict[str, Any]], entry: dict[str, Any]
    ) -> None:
        entries = {k: v for k, v in entries.items() if k == config.repository_id or url not in v.get("urls", ())}
        entries[config.repository_id] = entry
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"format_version": 1, "repositories": entries}, indent=1))
            os.replace(tmp, self.path)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
