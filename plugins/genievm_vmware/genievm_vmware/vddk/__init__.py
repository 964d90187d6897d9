"""VMware's Virtual Disk Development Kit (VixDiskLib) through ctypes, loaded at run time.

``libvixDiskLib.so`` is looked up in the directory the config or ``VDDK_LIBDIR``
names (:mod:`.library`) and initialized once per process (:mod:`.session`).
A typical use::

    lib = VixDiskLib.initialize(Path("/opt/vmware-vix-disklib-distrib"))
    params = ConnectParams(server="vc.example", user="backup@vsphere.local", password=secret,
                           thumbprint="AA:BB:...", vmx_spec="moref=vm-42")
    with Connection(lib, params, read_only=True, snapshot="snapshot-7", modes="nbdssl") as conn:
        disk = conn.open("[datastore1] vm1/vm1.vmdk")
        data = disk.read(0, 1 << 20)
        extents = disk.allocated_blocks()

VixErrors become GenieVM errors with the library's own text (:mod:`.errors`).
"""

from __future__ import annotations

from .connection import Connection, ConnectParams
from .disk import Disk, DiskInfo
from .errors import VixErrorCode, translate
from .library import DEFAULT_LIBDIR, LoadedLibrary, configured_libdir, find_library, load_library
from .session import VixDiskLib, shutdown

__all__ = [
    "DEFAULT_LIBDIR",
    "ConnectParams",
    "Connection",
    "Disk",
    "DiskInfo",
    "LoadedLibrary",
    "VixDiskLib",
    "VixErrorCode",
    "configured_libdir",
    "find_library",
    "load_library",
    "shutdown",
    "translate",
]
