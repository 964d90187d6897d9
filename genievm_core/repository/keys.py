"""Repository keys: a random master key, wrapped by a passphrase-derived key.

The master key (32 random bytes) never leaves memory unwrapped. Four subkeys
are derived from it with HKDF-SHA256: one keys BLAKE3 for chunk ids, one is
the AES-256-GCM key for every object, one keys the HMAC that authenticates
the repository's ``config``, one the HMAC of the backup log's entries. The passphrase is only ever passed to scrypt
(NFC-normalised first in format 2 and later); it is never logged or stored.

Several passphrases may each wrap the same master key (key slots, ``genievm repo key``); a key file
(``genievm repo key export``) holds the master key itself, for safekeeping, and opens the repository
without any passphrase.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from genievm_core import key_ahead
from genievm_core.models.manifest import EncryptionRecord, KDFRecord, KeySlot

__all__ = [
    "KEY_FILE_FORMAT",
    "Keys",
    "WrongPassphrase",
    "create_keys",
    "key_file",
    "key_id",
    "keys_of_file",
    "rewrap_keys",
    "unwrap_keys",
    "unwrap_slot",
    "wrap_slot",
]

KEY_FILE_FORMAT = "genievm key file v1"

_WRAP_AAD = b"genievm master key v1"
SCRYPT_N = 1 << 15


class WrongPassphrase(Exception):
    """The wrapped key did not authenticate under the derived key."""


@dataclass(frozen=True, repr=False)
class Keys:
    id_key: bytes  # keys BLAKE3 chunk ids
    enc_key: bytes  # AES-256-GCM key for objects
    config_key: bytes  # HMAC-SHA256 key of the config's tag
    log_key: bytes  # HMAC-SHA256 key of the backup log's tags
    _master: bytes  # kept only to wrap it again (``genievm repo upgrade``, ``repo key``) or export it

    def __repr__(self) -> str:
        return "Keys(<redacted>)"


def _derive(master: bytes) -> Keys:
    def sub(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)

    return Keys(
        id_key=sub(b"genievm chunk-id v1"),
        enc_key=sub(b"genievm object-encryption v1"),
        config_key=sub(b"genievm config-auth v1"),
        log_key=sub(b"genievm backup-log v1"),
        _master=master,
    )


def _kek(passphrase: str, kdf: KDFRecord, *, normalize: bool) -> bytes:
    key = key_ahead.inputs(passphrase, kdf.salt, kdf.n, kdf.r, kdf.p, normalize=normalize)
    derived = key_ahead.take(key)  # the key derived ahead, when it is this one (genievm_core/key_ahead.py)
    return derived if derived is not None else key_ahead.derive(key)


def wrap_slot(passphrase: str, keys: Keys, *, scrypt_n: int = SCRYPT_N, label: str | None = None) -> KeySlot:
    """A key slot: the master key of ``keys`` wrapped by ``passphrase`` (new salt, NFC-normalised)."""
    kdf = KDFRecord(salt=base64.b64encode(os.urandom(16)).decode(), n=scrypt_n, r=8, p=1)
    nonce = os.urandom(12)
    wrapped = nonce + AESGCM(_kek(passphrase, kdf, normalize=True)).encrypt(nonce, keys._master, _WRAP_AAD)
    return KeySlot(kdf=kdf, wrapped_key=base64.b64encode(wrapped).decode(), label=label)


def key_id(slot: KeySlot) -> str:
    """A key slot's name in ``genievm repo key``: 8 hex digits of the SHA-256 of its wrapped key."""
    return hashlib.sha256(slot.wrapped_key.encode()).hexdigest()[:8]


def create_keys(passphrase: str, *, scrypt_n: int = SCRYPT_N) -> tuple[Keys, EncryptionRecord]:
    """A new master key, its subkeys, and the record that stores it wrapped (passphrase NFC-normalised)."""
    keys = _derive(os.urandom(32))
    return keys, rewrap_keys(passphrase, keys, scrypt_n=scrypt_n)


def rewrap_keys(passphrase: str, keys: Keys, *, scrypt_n: int = SCRYPT_N) -> EncryptionRecord:
    """The record of the same master key wrapped anew (new salt, passphrase NFC-normalised), one slot."""
    slot = wrap_slot(passphrase, keys, scrypt_n=scrypt_n)
    return EncryptionRecord(kdf=slot.kdf, wrapped_key=slot.wrapped_key)


def unwrap_keys(passphrase: str, record: EncryptionRecord, *, normalize: bool = True) -> Keys:
    """The keys of a record; ``normalize=False`` for format 1, which took the passphrase as given."""
    return unwrap_slot(passphrase, record, normalize=normalize)[0]


def unwrap_slot(passphrase: str, record: EncryptionRecord, *, normalize: bool = True) -> tuple[Keys, int]:
    """The keys of a record, and which of its slots the passphrase opened (0: the first)."""
    for number, slot in enumerate(record.slots):
        try:
            wrapped = base64.b64decode(slot.wrapped_key, validate=True)
            kek = _kek(passphrase, slot.kdf, normalize=normalize)
            return _derive(AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD)), number
        except (InvalidTag, ValueError):
            continue
    raise WrongPassphrase()


def key_file(keys: Keys, repository_id: str) -> bytes:
    """The key file of a repository: its id and its master key in base64, as JSON."""
    data = {"format": KEY_FILE_FORMAT, "repository_id": repository_id,
            "master_key": base64.b64encode(keys._master).decode()}  # fmt: skip
    return json.dumps(data, indent=1).encode() + b"\n"


def keys_of_file(data: bytes) -> tuple[str, Keys]:
    """The repository id and the keys of a key file; ValueError when it is not one."""
    try:
        parsed: Any = json.loads(data)
        if not isinstance(parsed, dict) or parsed.get("format") != KEY_FILE_FORMAT:
            raise ValueError(f"not a {KEY_FILE_FORMAT!r}")
        master = base64.b64decode(str(parsed["master_key"]), validate=True)
        repository_id = str(parsed["repository_id"])
    except (KeyError, RecursionError) as exc:
        raise ValueError(f"no {exc}") from None
    if len(master) != 32:
        raise ValueError("its master key is not 32 bytes")
    return repository_id, _derive(master)
