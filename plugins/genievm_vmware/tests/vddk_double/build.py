"""Compiling the VDDK ABI test double, and asking it what the wrapper did.

:func:`compile_double` builds ``vixDiskLibDouble.c`` with gcc into a
``lib64/libvixDiskLib.so`` laid out like VMware's distribution.
:func:`install_double` copies a build into a directory of its own: each copy is
a separate ``dlopen`` (a new file, a new inode), with its own initialization
state, so a test gets a library that VixDiskLib_InitEx has not seen yet.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("vixDiskLibDouble.c")
LIBRARY = "libvixDiskLib.so"


def compile_double(out_dir: Path, *, before_6_7: bool = False) -> Path:
    """Build the double into ``out_dir/lib64/libvixDiskLib.so``; ``before_6_7`` leaves out VDDK 6.7's functions."""
    target = out_dir / "lib64" / LIBRARY
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = ["-DVDDK_DOUBLE_BEFORE_6_7"] if before_6_7 else []
    subprocess.run(
        ["gcc", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", *flags, "-o", str(target), str(SOURCE)],
        check=True,
        capture_output=True,
    )
    return target


def install_double(build: Path, distrib_dir: Path) -> Path:
    """A fresh copy of a built double at ``distrib_dir/lib64/libvixDiskLib.so``; returns ``distrib_dir``."""
    (distrib_dir / "lib64").mkdir(parents=True, exist_ok=True)
    shutil.copy2(build, distrib_dir / "lib64" / LIBRARY)
    return distrib_dir


@dataclass
class DoubleProbe:
    """The double's test-only functions (VixDiskLibDouble_*), from the same loaded copy the wrapper uses."""

    library: Path

    def _lib(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(self.library.resolve()))  # same path: the same dlopen handle as the wrapper's
        lib.VixDiskLibDouble_LastConnect.restype = ctypes.c_char_p
        lib.VixDiskLibDouble_Layout.restype = ctypes.c_long
        lib.VixDiskLibDouble_Layout.argtypes = [ctypes.c_char_p]
        return lib

    def open_connections(self) -> int:
        return int(self._lib().VixDiskLibDouble_OpenConnections())

    def open_disks(self) -> int:
        return int(self._lib().VixDiskLibDouble_OpenDisks())

    def init_count(self) -> int:
        return int(self._lib().VixDiskLibDouble_InitCount())

    def last_connect(self) -> dict[str, str]:
        """What the last successful VixDiskLib_ConnectEx got: server, thumbprint, user, vmxSpec, snapshot, modes..."""
        raw = self._lib().VixDiskLibDouble_LastConnect() or b""
        return dict(item.split("=", 1) for item in raw.decode().split(";") if "=" in item)

    def layout(self, what: str) -> int:
        return int(self._lib().VixDiskLibDouble_Layout(what.encode()))
