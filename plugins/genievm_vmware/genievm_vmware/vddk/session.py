"""VixDiskLib initialized in this process: InitEx once, Exit once at the end.

VDDK must be initialized once per process: a second VixDiskLib_InitEx, or an
InitEx after VixDiskLib_Exit, is not supported. :meth:`VixDiskLib.initialize`
therefore hands out one shared object per library file, and VixDiskLib_Exit
runs when the process exits (:func:`shutdown`, registered with ``atexit``).

VixDiskLib_ConnectEx, Disconnect, Open and Close are not thread-safe in VDDK;
they run under :attr:`VixDiskLib.lock`. Reads and writes on different disk
handles may run in parallel (ctypes releases the GIL during the call).
"""

from __future__ import annotations

import atexit
import ctypes
import threading
from pathlib import Path

from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger

from .abi import API_VERSION
from .errors import translate
from .library import LoadedLibrary, load_library
from .logbridge import LOG_CALLBACKS

__all__ = ["VixDiskLib", "shutdown"]

log = get_logger("genievm.vmware.vddk")

_registry_lock = threading.Lock()
_initialized: dict[Path, VixDiskLib] = {}
_exited: set[Path] = set()
_atexit_registered = False


class VixDiskLib:
    """The VDDK library of one ``libvixDiskLib.so``, initialized; get it with :meth:`initialize`."""

    def __init__(self, library: LoadedLibrary) -> None:
        self.library = library
        self.lock = threading.RLock()  # VDDK's connect/open/close/disconnect are not thread-safe
        self.exited = False

    @classmethod
    def initialize(cls, libdir: Path, *, config_file: Path | None = None) -> VixDiskLib:
        """Load the library under ``libdir`` and call VixDiskLib_InitEx, unless this process already did.

        ``config_file`` is VDDK's own configuration file (``name = "value"``
        lines, e.g. ``vixDiskLib.nfcAio.Session.BufSizeIn64KB``); it only takes
        effect on the first initialization.
        """
        global _atexit_registered
        library = load_library(libdir)
        with _registry_lock:
            if library.path in _initialized:
                return _initialized[library.path]
            if library.path in _exited:
                raise ProviderError(
                    f"provider vmware: VDDK {library.path} was already exited in this process; "
                    "VixDiskLib cannot be initialized twice"
                )
            log_func, warn_func, panic_func = LOG_CALLBACKS
            err = library["VixDiskLib_InitEx"](
                API_VERSION[0],
                API_VERSION[1],
                log_func,
                warn_func,
                panic_func,
                str(library.distrib_dir).encode(),
                str(config_file).encode() if config_file else None,
            )
            session = cls(library)
            session.check(err, "VixDiskLib_InitEx", host="localhost", user="-", subject=str(library.path))
            _initialized[library.path] = session
            if not _atexit_registered:
                atexit.register(shutdown)
                _atexit_registered = True
            log.info("vddk initialized", library=str(library.path), api=f"{API_VERSION[0]}.{API_VERSION[1]}")
            return session

    def error_text(self, err: int) -> str:
        """VixDiskLib_GetErrorText for ``err`` (freed with VixDiskLib_FreeErrorText)."""
        pointer = self.library["VixDiskLib_GetErrorText"](err, None)
        if not pointer:
            return "no error text"
        try:
            return ctypes.string_at(pointer).decode("utf-8", "replace").strip()
        finally:
            self.library["VixDiskLib_FreeErrorText"](pointer)

    def check(self, err: int, call: str, *, host: str, user: str, subject: str = "") -> None:
        """Raise the GenieVM error for ``err`` unless it is VIX_OK."""
        if err:
            raise translate(err, self.error_text(err), call, host=host, user=user, subject=subject)

    def transport_modes(self) -> list[str]:
        """VixDiskLib_ListTransportModes: the modes this library knows, in its default order."""
        modes = self.library["VixDiskLib_ListTransportModes"]()
        return modes.decode().split(":") if modes else []

    def exit(self) -> None:
        """VixDiskLib_Exit. The library cannot be initialized again in this process afterwards."""
        with _registry_lock, self.lock:
            if self.exited:
                return
            self.library["VixDiskLib_Exit"]()
            self.exited = True
            _initialized.pop(self.library.path, None)
            _exited.add(self.library.path)


def shutdown() -> None:
    """VixDiskLib_Exit for every library this process initialized (runs at interpreter exit)."""
    with _registry_lock:
        sessions = list(_initialized.values())
    for session in sessions:
        session.exit()
