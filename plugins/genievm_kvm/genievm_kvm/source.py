"""A disk at a backup's point in time, read over NBD."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import BoundCBTSource, CBTSource, ChangedExtents, DiskSource
from genievm_kvm.nbd_export import NBDClient

__all__ = ["Changes", "NBDDiskSource", "Session"]


@dataclass(frozen=True)
class Changes:
    """How a disk's changes since its parent backup can be known.

    ``base`` is the checkpoint or bitmap the export's dirty bitmap counts from and
    ``context`` the NBD meta context that carries it; or ``known`` holds the changes
    found another way (LVM thin). Without them, ``reason`` says why.
    """

    source: str | None = None
    base: str | None = None
    context: str | None = None
    reason: str = ""
    next_token: str | None = None
    known: ChangedExtents | None = None


class NBDDiskSource:
    """Reads one export; counts what it read so tests and logs can tell."""

    def __init__(self, info: DiskInfo, client: NBDClient, changes: Changes) -> None:
        self._info = info
        self._client = client
        self._changes = changes
        self.offered: tuple[CBTSource, ...] = ()  # the plugin's CBT sources, bound to this export by cbt_sources
        self.bytes_read = 0

    @property
    def info(self) -> DiskInfo:
        return self._info

    def read(self, offset: int, length: int) -> bytes:
        self.bytes_read += length
        return self._client.pread(offset, length)

    def allocated_extents(self) -> list[Extent]:
        return self._client.allocated()

    def changed_extents(self, token: str | None) -> ChangedExtents:
        c = self._changes
        if c.known is not None:
            return c.known
        if c.base is None or c.context is None or c.source is None:
            return ChangedExtents.unavailable(c.reason or "no changed-block tracking for this disk")
        if token != c.base:
            return ChangedExtents.unavailable(f"the parent's token {token!r} is not the export's base {c.base!r}")
        if not self._client.has_context(c.context):
            return ChangedExtents.unavailable(f"the NBD export offers no {c.context}")
        return ChangedExtents(self._client.dirty(c.context), c.source)

    def cbt_sources(self) -> Sequence[CBTSource]:
        """The plugin's CBT sources bound to this backup (``OffersCBTSources``): the core asks these."""
        return [BoundCBTSource(source, self.changed_extents) for source in self.offered]

    def next_token(self) -> str | None:
        return self._changes.next_token

    def close(self) -> None:
        self._client.close()


class Session:
    """What ``open_backup`` yields: one source per disk."""

    def __init__(self, sources: Mapping[str, NBDDiskSource]) -> None:
        self._sources = dict(sources)

    def add(self, name: str, source: NBDDiskSource) -> None:
        self._sources[name] = source

    def offer(self, cbt_sources: Iterable[CBTSource]) -> None:
        """Offer ``cbt_sources`` to the core for every disk, answered from this session's exports."""
        for source in self._sources.values():
            source.offered = tuple(cbt_sources)

    def sources(self) -> Mapping[str, DiskSource]:
        return self._sources

    def close(self) -> None:
        for source in self._sources.values():
            source.close()
