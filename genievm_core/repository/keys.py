"""Repository keys: a random master key, wrapped by a passphrase-derived key.

The master key (32 random bytes) never leaves memory unwrapped. Four subkeys
are derived from it with HKDF-SHA256: one keys BLAKE3 for chunk ids, one is
the AES-256-GCM key for every object, one keys the HMAC that authenticates
the repository's ``config``, one the HMAC of the backup log's entries. The passphrase is only ever passed to scrypt
(NFC-normalised first in format 2 and later); it is never logged or stored.
"""

from __future__ import annotations

import base64
import os
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from genievm_core.models.manifest import EncryptionRecord, KDFRecord

__all__ = ["Keys", "WrongPassphrase", "create_keys", "rewrap_keys", "unwrap_keys"]

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
    _master: bytes  # kept only to wrap it again (``genievm repo upgrade``)

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
    if normalize:  # the NFD and NFC spellings of one passphrase are one passphrase
        passphrase = unicodedata.normalize("NFC", passphrase)
    salt = base64.b64decode(kdf.salt)
    return Scrypt(salt=salt, length=32, n=kdf.n, r=kdf.r, p=kdf.p).derive(passphrase.encode())


def _wrap(passphrase: str, master: bytes, scrypt_n: int) -> EncryptionRecord:
    kdf = KDFRecord(salt=base64.b64encode(os.urandom(16)).decode(), n=scrypt_n, r=8, p=1)
    nonce = os.urandom(12)
    wrapped = nonce + AESGCM(_kek(passphrase, kdf, normalize=True)).encrypt(nonce, master, _WRAP_AAD)
    return EncryptionRecord(kdf=kdf, wrapped_key=base64.b64encode(wrapped).decode())


def create_keys(passphrase: str, *, scrypt_n: int = SCRYPT_N) -> tuple[Keys, EncryptionRecord]:
    """A new master key, its subkeys, and the record that stores it wrapped (passphrase NFC-normalised)."""
    master = os.urandom(32)
    return _derive(master), _wrap(passphrase, master, scrypt_n)


def rewrap_keys(passphrase: str, keys: Keys, *, scrypt_n: int = SCRYPT_N) -> EncryptionRecord:
    """The record of the same master key wrapped anew (new salt, passphrase NFC-normalised)."""
    return _wrap(passphrase, keys._master, scrypt_n)


def unwrap_keys(passphrase: str, record: EncryptionRecord, *, normalize: bool = True) -> Keys:
    """The keys of a record; ``normalize=False`` for format 1, which took the passphrase as given."""
    try:
        wrapped = base64.b64decode(record.wrapped_key, validate=True)
        kek = _kek(passphrase, record.kdf, normalize=normalize)
        master = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD)
    except (InvalidTag, ValueError):
        raise WrongPassphrase() from None
    return _derive(master)
