"""The C side of VixDiskLib: constants, struct layouts and function prototypes.

Everything here follows ``vixDiskLib.h`` of VDDK 7.0 and 8.0 on 64-bit Linux.
VDDK 6.7 added the functions marked optional below; 7.0 added the sector sizes
at the end of ``VixDiskLibInfo`` (the library allocates that struct, and
VixDiskLib_InitEx is asked for API 7.0, so the fields are there). VDDK speaks
in 512-byte sectors; a ``VixError`` is a 64-bit value whose low 16 bits are the
error code.

``VixDiskLibConnectParams`` grew fields over the releases. The library allocates
it itself through ``VixDiskLib_AllocateConnectParams`` (VDDK >= 6.7) so that its
own size is used; only with an older library is the struct below allocated here.
"""

from __future__ import annotations

import ctypes
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    Union,
    c_char,
    c_char_p,
    c_int,
    c_long,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any

__all__ = [
    "API_VERSION",
    "CRED_UID",
    "FLAG_OPEN_READ_ONLY",
    "FLAG_OPEN_UNBUFFERED",
    "MAX_CHUNK_NUMBER",
    "MIN_CHUNK_SIZE",
    "OPTIONAL_FUNCTIONS",
    "PROTOTYPES",
    "SECTOR_SIZE",
    "Block",
    "BlockList",
    "ConnectParams",
    "Geometry",
    "Info",
    "LogFunc",
    "block_array",
]

API_VERSION = (7, 0)  # the major.minor passed to VixDiskLib_InitEx: the client needs at least VDDK 7.0's API
SECTOR_SIZE = 512  # VIXDISKLIB_SECTOR_SIZE
FLAG_OPEN_UNBUFFERED = 1 << 0  # VIXDISKLIB_FLAG_OPEN_UNBUFFERED
FLAG_OPEN_SINGLE_LINK = 1 << 1  # VIXDISKLIB_FLAG_OPEN_SINGLE_LINK
FLAG_OPEN_READ_ONLY = 1 << 2  # VIXDISKLIB_FLAG_OPEN_READ_ONLY
CRED_UID = 1  # VIXDISKLIB_CRED_UID: user name and password
SPEC_VMX = 0  # VIXDISKLIB_SPEC_VMX: vmxSpec names the VM
MIN_CHUNK_SIZE = 128  # VIXDISKLIB_MIN_CHUNK_SIZE, sectors: the smallest chunk QueryAllocatedBlocks takes
MAX_CHUNK_NUMBER = 512 * 1024  # VIXDISKLIB_MAX_CHUNK_NUMBER: the most chunks one QueryAllocatedBlocks call covers

VixError = c_uint64
SectorType = c_uint64
Bool = c_uint8  # VDDK's Bool is a char; c_uint8 passes the same way and takes 0/1
Connection = c_void_p  # VixDiskLibConnection, opaque
Handle = c_void_p  # VixDiskLibHandle, opaque

# void (*)(const char *fmt, va_list args); a va_list parameter is passed as a pointer on x86-64 and arm64
LogFunc = CFUNCTYPE(None, c_char_p, c_void_p)


class UidPasswdCreds(Structure):
    _fields_ = [("userName", c_char_p), ("password", c_void_p)]  # password: our own zeroable buffer


class SessionIdCreds(Structure):
    _fields_ = [("cookie", c_char_p), ("userName", c_char_p), ("key", c_char_p)]


class Creds(Union):
    _fields_ = [("uid", UidPasswdCreds), ("sessionId", SessionIdCreds), ("ticketId", c_void_p)]


class VStorageObjectSpec(Structure):
    _fields_ = [("id", c_char_p), ("datastoreMoRef", c_char_p), ("ssId", c_char_p)]


class Spec(Union):
    _fields_ = [("vStorageObjSpec", VStorageObjectSpec)]


class ConnectParams(Structure):
    """VixDiskLibConnectParams; fields after ``nfcHostPort`` are not used by GenieVM."""

    _fields_ = [
        ("vmxSpec", c_char_p),  # "moref=vm-42" for a VM managed by vCenter
        ("serverName", c_char_p),
        ("thumbPrint", c_char_p),  # SHA-1 of the server's certificate, "AA:BB:..."
        ("privateUse", c_long),
        ("credType", c_int),
        ("creds", Creds),
        ("port", c_uint32),
        ("nfcHostPort", c_uint32),
        ("vimApiVer", c_char_p),  # not used by VDDK
        ("reserved", c_char * 8),
        ("state", c_void_p),  # VDDK's internal use
        ("spec", Spec),
        ("specType", c_int),
    ]


class Geometry(Structure):
    _fields_ = [("cylinders", c_uint32), ("heads", c_uint32), ("sectors", c_uint32)]


class Info(Structure):
    """VixDiskLibInfo, as returned by VixDiskLib_GetInfo (freed with VixDiskLib_FreeInfo)."""

    _fields_ = [
        ("biosGeo", Geometry),
        ("physGeo", Geometry),
        ("capacity", SectorType),  # sectors
        ("adapterType", c_int),
        ("numLinks", c_int),
        ("parentFileNameHint", c_char_p),
        ("uuid", c_char_p),
        ("logicalSectorSize", c_uint32),  # added in VDDK 7.0
        ("physicalSectorSize", c_uint32),  # added in VDDK 7.0
    ]


class Block(Structure):
    _fields_ = [("offset", SectorType), ("length", SectorType)]  # sectors


class BlockList(Structure):
    """VixDiskLibBlockList: ``numBlocks`` then that many blocks (declared as a one-element array in C)."""

    _fields_ = [("numBlocks", c_uint32), ("blocks", Block * 1)]


def block_array(block_list: Any) -> Any:
    """The ``numBlocks`` blocks of a ``POINTER(BlockList)`` as a ctypes array (no copy)."""
    count = block_list.contents.numBlocks
    address = ctypes.addressof(block_list.contents) + BlockList.blocks.offset
    return (Block * count).from_address(address)


# name -> (restype, argtypes). Declared for every function the wrapper calls.
PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "VixDiskLib_InitEx": (VixError, [c_uint32, c_uint32, LogFunc, LogFunc, LogFunc, c_char_p, c_char_p]),
    "VixDiskLib_Exit": (None, []),
    "VixDiskLib_ListTransportModes": (c_char_p, []),
    "VixDiskLib_ConnectEx": (VixError, [POINTER(ConnectParams), Bool, c_char_p, c_char_p, POINTER(Connection)]),
    "VixDiskLib_Disconnect": (VixError, [Connection]),
    "VixDiskLib_FreeConnectParams": (None, [POINTER(ConnectParams)]),
    "VixDiskLib_Open": (VixError, [Connection, c_char_p, c_uint32, POINTER(Handle)]),
    "VixDiskLib_GetTransportMode": (c_char_p, [Handle]),
    "VixDiskLib_GetInfo": (VixError, [Handle, POINTER(POINTER(Info))]),
    "VixDiskLib_FreeInfo": (None, [POINTER(Info)]),
    "VixDiskLib_Read": (VixError, [Handle, SectorType, SectorType, c_void_p]),
    "VixDiskLib_Write": (VixError, [Handle, SectorType, SectorType, c_void_p]),
    "VixDiskLib_Flush": (VixError, [Handle]),
    "VixDiskLib_Close": (VixError, [Handle]),
    # GetErrorText returns memory the caller gives back with FreeErrorText: keep it a raw pointer
    "VixDiskLib_GetErrorText": (c_void_p, [VixError, c_char_p]),
    "VixDiskLib_FreeErrorText": (None, [c_void_p]),
    # added in VDDK 6.7
    "VixDiskLib_AllocateConnectParams": (POINTER(ConnectParams), []),
    "VixDiskLib_QueryAllocatedBlocks": (
        VixError,
        [Handle, SectorType, SectorType, SectorType, POINTER(POINTER(BlockList))],
    ),
    "VixDiskLib_FreeBlockList": (VixError, [POINTER(BlockList)]),
}
OPTIONAL_FUNCTIONS = frozenset(
    {
        "VixDiskLib_AllocateConnectParams",
        "VixDiskLib_QueryAllocatedBlocks",
        "VixDiskLib_FreeBlockList",
        "VixDiskLib_Flush",
    }
)
