"""VDDK's log, warning and panic callbacks, forwarded to structlog.

VixDiskLib_InitEx takes three ``void (*)(const char *fmt, va_list args)``
functions. Python cannot walk a ``va_list``, so each message is formatted by
the C library's ``vsnprintf`` into a fixed buffer (longer messages are cut).
The callbacks are module-level objects: VDDK may call them from its own
threads for as long as the library is initialized, so they must never be
garbage-collected.

VDDK is not known to log passwords, but a connection's password is registered
here (:func:`hide`) while the connection lives and replaced by ``***`` in any
line VDDK logs.
"""

from __future__ import annotations

import ctypes
import threading
from collections import Counter
from typing import Any

from genievm_core.logging import get_logger

from .abi import LogFunc

__all__ = ["LOG_CALLBACKS", "hide", "unhide"]

log = get_logger("genievm.vmware.vddk")

_MESSAGE_MAX = 4096
_libc = ctypes.CDLL(None)
_vsnprintf = _libc.vsnprintf
_vsnprintf.restype = ctypes.c_int
_vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


_secrets_lock = threading.Lock()
_secrets: Counter[str] = Counter()


def hide(secret: str) -> None:
    """Replace ``secret`` by ``***`` in VDDK's log lines until as many :func:`unhide` calls."""
    if secret:
        with _secrets_lock:
            _secrets[secret] += 1


def unhide(secret: str) -> None:
    if secret:
        with _secrets_lock:
            _secrets[secret] -= 1
            if _secrets[secret] <= 0:
                del _secrets[secret]


def _format(fmt: bytes | None, args: int | None) -> str:
    if fmt is None:
        return ""
    buffer = ctypes.create_string_buffer(_MESSAGE_MAX)
    _vsnprintf(buffer, _MESSAGE_MAX, fmt, args)
    message = buffer.value.decode("utf-8", "replace").rstrip()
    ctypes.memset(buffer, 0, _MESSAGE_MAX)
    with _secrets_lock:
        for secret in _secrets:
            message = message.replace(secret, "***")
    return message


def _forward(level: str) -> Any:
    def callback(fmt: bytes | None, args: int | None) -> None:
        try:
            getattr(log, level)("vddk library", message=_format(fmt, args))
        except Exception:  # an exception must not unwind into VDDK's C stack
            pass

    return LogFunc(callback)


# (log, warn, panic) as VixDiskLib_InitEx wants them. A VDDK "panic" is logged; VDDK aborts on its own.
LOG_CALLBACKS = (_forward("debug"), _forward("warning"), _forward("error"))
