"""Repository keys: a random master key, wrapped by a passphrase-derived key.

The master key (32 random bytes) never leaves memory unwrapped. Two subkeys
are derived from it with HKDF-SHA256: one keys BLAKE3 for chunk ids, the other
is the AES-256-GCM key for every object. The passphrase is only ever passed
to scrypt; it is never logged or stored.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from genievm_core.models.manifest import EncryptionRecord, KDFRecord

__all__ = ["Keys", "WrongPassphrase", "create_keys", "unwrap_keys"]

_WRAP_AAD = b"genievm master key v1"
SCRYPT_N = 1 << 15


class WrongPassphrase(Exception):
    """The wrapped key did not authenticate under the derived key."""


@dataclass(frozen=True, repr=False)
class Keys:
    id_key: bytes  # keys BLAKE3 chunk ids
    enc_key: bytes  # AES-256-GCM key for objects

    def __repr__(self) -> str:
        return "Keys(<redacted>)"


def _derive(master: bytes) -> Keys:
    def sub(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)

    return Keys(id_key=sub(b"genievm chunk-id v1"), enc_key=sub(b"genievm object-encryption v1"))


def _kek(passphrase: str, kdf: KDFRecord) -> bytes:
    salt = base64.b64decode(kdf.salt)
    return Scrypt(salt=salt, length=32, n=kdf.n, r=kdf.r, p=kdf.p).derive(passphrase.encode())


def create_keys(passphrase: str, *, scrypt_n: int = SCRYPT_N) -> tuple[Keys, EncryptionRecord]:
    """A new master key, its subkeys, and the record that stores it wrapped."""
    master = os.urandom(32)
    kdf = KDFRecord(salt=base64.b64encode(os.urandom(16)).decode(), n=scrypt_n, r=8, p=1)
    nonce = os.urandom(12)
    wrapped = nonce + AESGCM(_kek(passphrase, kdf)).encrypt(nonce, master, _WRAP_AAD)
    record = EncryptionRecord(kdf=kdf, wrapped_key=base64.b64encode(wrapped).decode())
    return _derive(master), record


def unwrap_keys(passphrase: str, record: EncryptionRecord) -> Keys:
    wrapped = base64.b64decode(record.wrapped_key)
    try:
        master = AESGCM(_kek(passphrase, record.kdf)).decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD)
    except InvalidTag:
        raise WrongPassphrase() from None
    return _derive(master)
