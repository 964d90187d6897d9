"""An open virtual disk: GetInfo, Read, Write, QueryAllocatedBlocks, Close.

VixDiskLib reads and writes whole 512-byte sectors. :meth:`Disk.read` and
:meth:`Disk.write` take byte offsets; when a range does not start or end on a
sector boundary they read the edge sectors and slice (a write then reads,
patches and writes back those edge sectors). The engine reads chunk-aligned
ranges, which never need that.

VixDiskLib_QueryAllocatedBlocks (VDDK 6.7 and later) reports, in sectors, the
chunks of a disk that hold data. Its ``chunkSize`` is a power of two of at
least ``VIXDISKLIB_MIN_CHUNK_SIZE`` (128) sectors, the queried range is a whole
number of chunks, and one call covers at most ``VIXDISKLIB_MAX_CHUNK_NUMBER``
chunks. A capacity that is not a whole number of chunks leaves a tail that
cannot be queried: it is reported as allocated.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from genievm_core.errors import ProviderError
from genievm_core.models.extents import Extent, normalize

from . import abi
from .errors import VixErrorCode, error_code

if TYPE_CHECKING:
    from .session import VixDiskLib

__all__ = ["DEFAULT_CHUNK_SECTORS", "Disk", "DiskInfo"]

SECTOR = abi.SECTOR_SIZE
DEFAULT_CHUNK_SECTORS = 2048  # 1 MiB: QueryAllocatedBlocks' granularity


@dataclass(frozen=True)
class DiskInfo:
    """VixDiskLibInfo of an open disk; ``capacity`` in bytes, ``geometry`` as (cylinders, heads, sectors)."""

    capacity: int
    bios_geometry: tuple[int, int, int]
    physical_geometry: tuple[int, int, int]
    adapter_type: int
    links: int  # base disk plus redo logs (snapshots)
    parent_hint: str | None
    uuid: str | None
    logical_sector_size: int  # bytes; VixDiskLib_Read and Write still count 512-byte sectors
    physical_sector_size: int


class Disk:
    """A disk opened with VixDiskLib_Open; get one from :meth:`Connection.open`.

    ``host`` and ``user`` are the connection's, for error messages; ``on_close``
    tells the connection the disk is closed.
    """

    def __init__(
        self,
        lib: VixDiskLib,
        handle: int,
        path: str,
        *,
        read_only: bool,
        host: str,
        user: str,
        on_close: Callable[[Disk], None],
    ) -> None:
        self.path = path
        self.read_only = read_only
        self.host = host
        self.user = user
        self._on_close = on_close
        self._handle: int | None = handle
        self._lib = lib
        self._info: DiskInfo | None = None

    # -- helpers

    def _call(self, name: str, *args: object) -> None:
        if self._handle is None:
            raise ProviderError(f"provider vmware: disk {self.path} is closed")
        err = self._lib.library[name](self._handle, *args)
        self._check(err, name)

    def _check(self, err: int, call: str) -> None:
        self._lib.check(err, call, host=self.host, user=self.user, subject=self.path)

    # -- information

    def info(self) -> DiskInfo:
        """VixDiskLib_GetInfo (then VixDiskLib_FreeInfo); asked once per open disk."""
        if self._info is None:
            pointer = ctypes.POINTER(abi.Info)()
            with self._lib.lock:
                self._call("VixDiskLib_GetInfo", ctypes.byref(pointer))
            try:
                raw = pointer.contents
                self._info = DiskInfo(
                    capacity=raw.capacity * SECTOR,
                    bios_geometry=(raw.biosGeo.cylinders, raw.biosGeo.heads, raw.biosGeo.sectors),
                    physical_geometry=(raw.physGeo.cylinders, raw.physGeo.heads, raw.physGeo.sectors),
                    adapter_type=raw.adapterType,
                    links=raw.numLinks,
                    parent_hint=raw.parentFileNameHint.decode() if raw.parentFileNameHint else None,
                    uuid=raw.uuid.decode() if raw.uuid else None,
                    logical_sector_size=raw.logicalSectorSize or SECTOR,
                    physical_sector_size=raw.physicalSectorSize or SECTOR,
                )
            finally:
                self._lib.library["VixDiskLib_FreeInfo"](pointer)
        return self._info

    @property
    def size(self) -> int:
        """Capacity in bytes."""
        return self.info().capacity

    @property
    def transport_mode(self) -> str:
        """VixDiskLib_GetTransportMode: the mode VDDK picked for this disk ("nbdssl", "hotadd", ...)."""
        if self._handle is None:
            raise ProviderError(f"provider vmware: disk {self.path} is closed")
        mode = self._lib.library["VixDiskLib_GetTransportMode"](self._handle)
        return mode.decode() if mode else "unknown"

    # -- data

    def read_sectors(self, start: int, count: int) -> bytearray:
        """VixDiskLib_Read of ``count`` sectors from sector ``start``."""
        data = bytearray(count * SECTOR)
        if count:
            buffer = (ctypes.c_char * len(data)).from_buffer(data)
            self._call("VixDiskLib_Read", start, count, buffer)
        return data

    def write_sectors(self, start: int, data: bytes | bytearray | memoryview) -> None:
        """VixDiskLib_Write of ``data`` (a whole number of sectors) from sector ``start``."""
        if len(data) % SECTOR:
            raise ValueError(f"VixDiskLib_Write takes whole {SECTOR}-byte sectors, not {len(data)} bytes")
        if data:
            buffer = (ctypes.c_char * len(data)).from_buffer_copy(data) if not isinstance(data, bytes) else data
            self._call("VixDiskLib_Write", start, len(data) // SECTOR, buffer)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at byte ``offset``; any alignment."""
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length: {offset}, {length}")
        first, end = offset // SECTOR, -(-(offset + length) // SECTOR)
        data = self.read_sectors(first, end - first)
        skip = offset - first * SECTOR
        if skip == 0 and len(data) == length:
            return bytes(data)
        return bytes(memoryview(data)[skip : skip + length])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at byte ``offset``; partial edge sectors are read, patched and written back."""
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        length = len(data)
        if length == 0:
            return
        if offset % SECTOR == 0 and length % SECTOR == 0:
            self.write_sectors(offset // SECTOR, data)
            return
        first, end = offset // SECTOR, -(-(offset + length) // SECTOR)
        span = bytearray((end - first) * SECTOR)
        if offset % SECTOR:
            span[:SECTOR] = self.read_sectors(first, 1)
        if (offset + length) % SECTOR and (end - 1 > first or offset % SECTOR == 0):
            span[-SECTOR:] = self.read_sectors(end - 1, 1)
        skip = offset - first * SECTOR
        span[skip : skip + length] = data
        self.write_sectors(first, span)

    def flush(self) -> None:
        """VixDiskLib_Flush, where the library has it (VDDK 6.0 and later)."""
        if self._lib.library.has("VixDiskLib_Flush"):
            self._call("VixDiskLib_Flush")

    # -- allocation

    def allocated_blocks(self, chunk_sectors: int = DEFAULT_CHUNK_SECTORS) -> list[Extent] | None:
        """The byte extents that may hold data, from VixDiskLib_QueryAllocatedBlocks over the whole disk.

        None when the library cannot tell: it has no QueryAllocatedBlocks (before
        VDDK 6.7) or answers VIX_E_NOT_SUPPORTED (e.g. the datastore does not
        report allocation).
        """
        if chunk_sectors < abi.MIN_CHUNK_SIZE or chunk_sectors & (chunk_sectors - 1):
            raise ValueError(f"chunk_sectors must be a power of two >= {abi.MIN_CHUNK_SIZE}, not {chunk_sectors}")
        library = self._lib.library
        if not library.has("VixDiskLib_QueryAllocatedBlocks"):
            return None
        capacity = self.size // SECTOR
        queryable = capacity // chunk_sectors * chunk_sectors
        extents: list[Extent] = []
        start = 0
        while start < queryable:
            count = min(queryable - start, abi.MAX_CHUNK_NUMBER * chunk_sectors)
            block_list = ctypes.POINTER(abi.BlockList)()
            if self._handle is None:
                raise ProviderError(f"provider vmware: disk {self.path} is closed")
            err = library["VixDiskLib_QueryAllocatedBlocks"](
                self._handle, start, count, chunk_sectors, ctypes.byref(block_list)
            )
            if err and error_code(err) == VixErrorCode.VIX_E_NOT_SUPPORTED:
                return None
            self._check(err, "VixDiskLib_QueryAllocatedBlocks")
            try:
                for block in abi.block_array(block_list):
                    extents.append(Extent(block.offset * SECTOR, block.length * SECTOR))
            finally:
                library["VixDiskLib_FreeBlockList"](block_list)
            start += count
        if queryable < capacity:
            extents.append(Extent(queryable * SECTOR, (capacity - queryable) * SECTOR))
        return normalize(extents)

    # -- closing

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """VixDiskLib_Close. Safe to call twice; the handle is forgotten even when Close fails."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        self._on_close(self)
        with self._lib.lock:
            err = self._lib.library["VixDiskLib_Close"](handle)
        self._check(err, "VixDiskLib_Close")
