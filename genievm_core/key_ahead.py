"""A repository's key derived ahead: scrypt started on a thread of its own before the command needs the key.

scrypt (about 0.09 s, by design) releases the GIL, so it can run on another CPU while the process imports
its modules and loads its plugins. ``start_for_local`` reads a local repository's config as the file
storage lays it out and starts deriving the key of its first key slot; ``take`` hands that key to the
open (``genievm_core.repository.keys``) only when it would derive the very same one (passphrase, salt
and costs), and the open checks the config, the wrapped key and the config's tag as always. This
module imports nothing heavy: the CLI calls it before it imports the command it runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import unicodedata
from concurrent.futures import Future
from pathlib import Path
from typing import Any

__all__ = ["Inputs", "derive", "inputs", "start", "start_for_local", "take"]

Inputs = tuple[bytes, bytes, int, int, int]  # what scrypt derives a key from: secret, salt, n, r, p
MAX_CONFIG = 64 << 10  # as genievm_core.repository.config.MAX_CONFIG
BOUNDS = {"n": (1024, 1 << 22), "r": (1, 32), "p": (1, 16)}  # as KDFRecord's (models/manifest.py)

_ahead: dict[Inputs, Future[bytes]] = {}  # at most one: the key being derived, or derived and not yet taken
_lock = threading.Lock()


def inputs(passphrase: str, salt: str, n: int, r: int, p: int, *, normalize: bool) -> Inputs:
    """scrypt's inputs; ``normalize`` (format 2 and later): the NFD and NFC spellings are one passphrase."""
    if normalize:
        passphrase = unicodedata.normalize("NFC", passphrase)
    return passphrase.encode(), base64.b64decode(salt), n, r, p


def derive(key: Inputs) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    secret, salt, n, r, p = key
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret)


def take(key: Inputs) -> bytes | None:
    """The key derived ahead from ``key`` (waiting for it to be done), or None when none was."""
    with _lock:
        pending = _ahead.pop(key, None)
    return pending.result() if pending is not None else None


def start(key: Inputs) -> None:
    """Derive the key of ``key`` on a thread of its own, unless it is already being derived."""
    with _lock:
        if key in _ahead:
            return
        _ahead.clear()  # one at a time: a key derived ahead and never taken is not kept
        pending: Future[bytes] = Future()
        _ahead[key] = pending

    def run() -> None:
        try:
            pending.set_result(derive(key))
        except BaseException as exc:  # noqa: BLE001 - the open that takes it raises it
            pending.set_exception(exc)

    threading.Thread(target=run, name="genievm-scrypt", daemon=True).start()


def start_for_local(target: str, passphrase: str) -> None:
    """Start deriving the key of the repository at ``target`` when it is on this host's file system (a path
    or ``file://``) and encrypted with scrypt; anything else, or anything unreadable, starts nothing."""
    if not passphrase or ("://" in target and not target.startswith("file://")):
        return
    path = Path(target.removeprefix("file://")) / "config"
    try:
        if not path.is_file() or path.stat().st_size > MAX_CONFIG:
            return
        config = json.loads(path.read_bytes())
        key = _first_slot(config, passphrase)
    except (OSError, ValueError, binascii.Error):
        return  # the open says what is wrong
    if key is not None:
        start(key)


def _first_slot(config: Any, passphrase: str) -> Inputs | None:
    encryption = config.get("encryption") if isinstance(config, dict) else None
    kdf = encryption.get("kdf") if isinstance(encryption, dict) else None
    if not isinstance(kdf, dict) or kdf.get("name", "scrypt") != "scrypt" or not isinstance(kdf.get("salt"), str):
        return None
    costs: list[int] = []
    for name, (low, high) in BOUNDS.items():
        value = kdf.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return None
        costs.append(value)
    version = config.get("format_version")
    n, r, p = costs
    return inputs(passphrase, kdf["salt"], n, r, p, normalize=isinstance(version, int) and version >= 2)
