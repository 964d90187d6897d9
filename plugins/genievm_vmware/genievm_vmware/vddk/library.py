"""Finding and loading ``libvixDiskLib.so`` at run time.

VDDK is not redistributable, so GenieVM never links against it: the operator
unpacks VMware's ``vmware-vix-disklib-distrib`` tarball and names its directory
in the provider's config or in ``VDDK_LIBDIR``. The library sits in ``lib64``
below that directory; a ``libdir`` that is the ``lib64`` directory itself is
accepted too. VixDiskLib_InitEx is given the distribution directory (the one
holding ``lib64``) so that VDDK finds its plugins and bundled libraries.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genievm_core.errors import ConfigError

from .abi import OPTIONAL_FUNCTIONS, PROTOTYPES

__all__ = ["DEFAULT_LIBDIR", "LIBRARY_NAMES", "LoadedLibrary", "configured_libdir", "find_library", "load_library"]

DEFAULT_LIBDIR = Path("/opt/vmware-vix-disklib-distrib")
LIBRARY_NAMES = ("libvixDiskLib.so", "libvixDiskLib.so.8", "libvixDiskLib.so.7")
LIBDIR_ENV = "VDDK_LIBDIR"

_lock = threading.Lock()
_loaded: dict[Path, LoadedLibrary] = {}


def configured_libdir(configured: str | Path | None = None) -> Path:
    """The VDDK directory to use: the config's value, else ``$VDDK_LIBDIR``, else VMware's default place."""
    if configured:
        return Path(configured)
    from_env = os.environ.get(LIBDIR_ENV)
    return Path(from_env) if from_env else DEFAULT_LIBDIR


def _candidate_dirs(libdir: Path) -> list[Path]:
    return [libdir] if libdir.name == "lib64" else [libdir / "lib64", libdir]


def find_library(libdir: Path) -> Path:
    """``libvixDiskLib.so`` (or ``.so.8``, ``.so.7``) under ``libdir``; a ConfigError names where it looked."""
    dirs = _candidate_dirs(libdir)
    for directory in dirs:
        for name in LIBRARY_NAMES:
            if (directory / name).is_file():
                return directory / name
    looked = " or ".join(str(d) for d in dirs)
    raise ConfigError(
        f"invalid configuration: VDDK library directory: {LIBRARY_NAMES[0]} not found in {looked} "
        f"(set {LIBDIR_ENV} or the provider's VDDK library directory to where VMware's "
        "vmware-vix-disklib-distrib is unpacked)"
    )


@dataclass(frozen=True, eq=False)
class LoadedLibrary:
    """``libvixDiskLib.so`` loaded into this process, every function's prototype declared.

    ``functions`` holds the ctypes function of each name in ``abi.PROTOTYPES``
    that the library exports; the optional ones (added in VDDK 6.7) may be
    missing from an older library.
    """

    path: Path
    distrib_dir: Path  # VixDiskLib_InitEx's libDir
    functions: dict[str, Any]

    def has(self, name: str) -> bool:
        return name in self.functions

    def __getitem__(self, name: str) -> Any:
        return self.functions[name]


def load_library(libdir: Path) -> LoadedLibrary:
    """Load the VDDK library under ``libdir`` (once per process and path) and declare its prototypes."""
    path = find_library(libdir).resolve()
    with _lock:
        if path in _loaded:
            return _loaded[path]
        try:
            cdll = ctypes.CDLL(str(path))
        except OSError as exc:
            raise ConfigError(
                f"invalid configuration: VDDK library directory: cannot load {path}: {exc} "
                f"(VDDK's bundled libraries may need LD_LIBRARY_PATH={path.parent})"
            ) from exc
        functions: dict[str, Any] = {}
        for name, (restype, argtypes) in PROTOTYPES.items():
            try:
                function = getattr(cdll, name)
            except AttributeError:
                if name in OPTIONAL_FUNCTIONS:
                    continue
                raise ConfigError(
                    f"invalid configuration: VDDK library directory: {path} does not export {name} "
                    "(GenieVM needs VDDK 7.0 or later)"
                ) from None
            function.restype = restype
            function.argtypes = argtypes
            functions[name] = function
        distrib_dir = path.parent.parent if path.parent.name == "lib64" else path.parent
        loaded = LoadedLibrary(path=path, distrib_dir=distrib_dir, functions=functions)
        _loaded[path] = loaded
        return loaded
