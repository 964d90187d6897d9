"""What providers' disk sources have in common, for provider plugins to build on.

``CountingDiskSource`` is the part of a ``DiskSource`` that only moves bytes:
its ``DiskInfo``, ``read`` through the provider's own reader (an NBD client,
a VDDK or HTTPS handle) counting the bytes it read, and ``close``. A provider
subclasses it and adds what it knows of the disk: ``allocated_extents``,
``changed_extents`` and ``next_token``. ``DiskSources`` is the backup session
that a provider's ``open_backup`` yields: one source per disk name, and the VM's files.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping

from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import ChangedExtents, DiskSource

__all__ = ["CountingDiskSource", "DiskSources"]


class CountingDiskSource(ABC):
    """Reads a disk through ``read(offset, length)``; ``bytes_read`` says how much, for logs and tests.

    A ``DiskSource`` once a subclass gives the three methods below (see the protocol for each).
    """

    def __init__(self, info: DiskInfo, read: Callable[[int, int], bytes], close: Callable[[], None]) -> None:
        self._info = info
        self._read = read
        self._close = close
        self._counting = threading.Lock()  # a source that ReadsConcurrently is read from several threads
        self.bytes_read = 0

    @property
    def info(self) -> DiskInfo:
        return self._info

    def read(self, offset: int, length: int) -> bytes:
        with self._counting:
            self.bytes_read += length
        return self._read(offset, length)

    def close(self) -> None:
        self._close()

    @abstractmethod
    def allocated_extents(self) -> Iterable[Extent] | None: ...

    @abstractmethod
    def changed_extents(self, token: str | None) -> ChangedExtents: ...

    @abstractmethod
    def next_token(self) -> str | None: ...


class DiskSources:
    """A backup session: one disk source per disk name; ``close`` closes them all.

    ``files`` are the VM's files besides its disks (NVRAM, vTPM state) that ``vm_files``
    offers the core (``OffersVMFiles``): set them while the point in time exists.
    """

    def __init__(self, sources: Mapping[str, CountingDiskSource]) -> None:
        self._sources = dict(sources)
        self.files: dict[str, bytes] = {}

    def vm_files(self) -> Mapping[str, bytes]:
        return self.files

    def add(self, name: str, source: CountingDiskSource) -> None:
        self._sources[name] = source

    def sources(self) -> Mapping[str, DiskSource]:
        return self._sources

    def close(self) -> None:
        for source in self._sources.values():
            source.close()
