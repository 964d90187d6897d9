"""``genievm repo key``: the passphrases of a repository, each one a key slot wrapping the same master key.

Adding, removing or changing a passphrase rewrites only the ``config`` (sealed anew, so its tag still
proves it was written with the key); no chunk, index or manifest changes. The caller holds the
repository's exclusive lock, and the config must still be the one the repository was opened with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from genievm_core.errors import KeyManagementError
from genievm_core.models.manifest import EncryptionRecord, KeySlot
from genievm_core.repository.config import parse_config, seal_config
from genievm_core.repository.keys import Keys, key_file, key_id, wrap_slot
from genievm_core.repository.repo import Repository

__all__ = ["KeyInfo", "add_key", "change_passphrase", "export_key", "list_keys", "remove_key"]


@dataclass(frozen=True)
class KeyInfo:
    """One key slot as ``repo key list`` shows it; ``current``: the one this passphrase opened."""

    key_id: str
    label: str | None
    added_at: datetime | None
    scrypt_n: int
    current: bool


def list_keys(repo: Repository) -> list[KeyInfo]:
    record, _keys = _encryption(repo)
    return [
        KeyInfo(key_id(slot), slot.label, slot.added_at, slot.kdf.n, number == repo.key_slot)
        for number, slot in enumerate(record.slots)
    ]


def add_key(repo: Repository, passphrase: str, label: str | None = None) -> str:
    """Add a passphrase; the new slot's id."""
    record, keys = _encryption(repo)
    slot = wrap_slot(passphrase, keys, scrypt_n=record.kdf.n, label=label).model_copy(
        update={"added_at": datetime.now(UTC).replace(microsecond=0)}
    )
    _store(repo, [*record.slots, slot])
    return key_id(slot)


def remove_key(repo: Repository, removed_id: str) -> None:
    """Remove a passphrase: neither the last one nor the one that opened the repository."""
    record, _keys = _encryption(repo)
    slots = list(record.slots)
    ids = [key_id(slot) for slot in slots]
    if removed_id not in ids:
        raise KeyManagementError(f"repository {repo.url} has no key {removed_id} (its keys: {', '.join(ids)})")
    number = ids.index(removed_id)
    if len(slots) == 1:
        raise KeyManagementError(f"repository {repo.url}: key {removed_id} is its only key; add another first")
    if number == repo.key_slot:
        raise KeyManagementError(
            f"repository {repo.url}: key {removed_id} is the passphrase given; open with another key to remove it"
        )
    del slots[number]
    _store(repo, slots)
    if repo.key_slot is not None and repo.key_slot > number:
        repo.key_slot -= 1


def change_passphrase(repo: Repository, passphrase: str) -> str:
    """Replace the passphrase that opened the repository (its label kept); the new slot's id."""
    record, keys = _encryption(repo)
    if repo.key_slot is None:
        raise KeyManagementError(
            f"repository {repo.url} was opened with a key file, which has no passphrase to change: "
            "use `genievm repo key add`"
        )
    slots = list(record.slots)
    old = slots[repo.key_slot]
    slots[repo.key_slot] = wrap_slot(passphrase, keys, scrypt_n=old.kdf.n, label=old.label).model_copy(
        update={"added_at": datetime.now(UTC).replace(microsecond=0)}
    )
    _store(repo, slots)
    return key_id(slots[repo.key_slot])


def export_key(repo: Repository) -> bytes:
    """The repository's key file: its master key, which opens it without a passphrase."""
    _record, keys = _encryption(repo)
    return key_file(keys, repo.config.repository_id)


def _encryption(repo: Repository) -> tuple[EncryptionRecord, Keys]:
    config, keys = repo.config, repo.codec.keys
    if config.encryption is None or keys is None:
        raise KeyManagementError(f"repository {repo.url} is not encrypted: it has no keys")
    if config.format_version < 2:
        raise KeyManagementError(
            f"repository {repo.url} has a config of format {config.format_version}: run `genievm repo upgrade` first"
        )
    return config.encryption, keys


def _store(repo: Repository, slots: list[KeySlot]) -> None:
    stored, _data = parse_config(repo.url, repo.storage.get("config"))
    if stored != repo.config:
        raise KeyManagementError(f"repository {repo.url}: its config changed since it was opened; run again")
    first, *more = slots
    record = EncryptionRecord(**first.model_dump(), more_keys=tuple(more))
    config, blob = seal_config(repo.config.model_copy(update={"encryption": record}), repo.codec.keys)
    repo.check_locks()
    repo.storage.put("config", blob)
    repo.config = config
    if repo.known is not None:
        repo.known.remember(repo.url, config)
