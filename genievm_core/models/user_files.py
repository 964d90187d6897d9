"""Files a user names on the command line (a job config, a passphrase file), read with a bound.

A regular file or a pipe (``--passphrase-file <(pass show backup)``) is read,
at most ``limit`` bytes of it; a device (``/dev/zero``), a folder or a socket
is refused before anything is read, so a wrong name never reads for ever.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from genievm_core.errors import ConfigError

__all__ = ["read_user_file", "text_of"]


def read_user_file(path: Path, *, what: str, limit: int) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them; ConfigError naming ``what`` (``config file``) otherwise."""
    try:
        with open(path, "rb", buffering=0) as f:
            mode = os.fstat(f.fileno()).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                raise ConfigError(f"{what} {path} is not a regular file")
            data = _read_at_most(f.fileno(), limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {_size(limit)}")
    return data


def text_of(data: bytes, path: Path, *, what: str) -> str:
    """``data`` decoded as UTF-8; ConfigError (without the bytes, which may be a secret) otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def _read_at_most(fd: int, size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left > 0:
        part = os.read(fd, min(left, 1 << 20))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"
