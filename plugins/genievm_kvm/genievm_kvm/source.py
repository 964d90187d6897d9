"""A disk at a backup's point in time, read over NBD."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from genievm_core.engine import CountingDiskSource, DiskSources
from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import BoundCBTSource, CBTSource, ChangedExtents
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


class NBDDiskSource(CountingDiskSource):
    """Reads one export; its extents and changes come from the export's block status.

    Reads may come from several threads at once (``ReadsConcurrently``): the engine's workers each read
    their chunk whole, in one request, over a connection of their own where the export allows several.
    """

    concurrent_reads = True

    def __init__(self, info: DiskInfo, client: NBDClient, changes: Changes) -> None:
        super().__init__(info, client.pread, client.close)
        self._client = client
        self._changes = changes
        self.offered: tuple[CBTSource, ...] = ()  # the plugin's CBT sources, bound to this export by cbt_sources

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


class Session(DiskSources):
    """What ``open_backup`` yields: one source per disk, and the VM's firmware files (``genievm_kvm.firmware``)."""

    def offer(self, cbt_sources: Iterable[CBTSource]) -> None:
        """Offer ``cbt_sources`` to the core for every disk, answered from this session's exports."""
        for source in self.sources().values():
            assert isinstance(source, NBDDiskSource)
            source.offered = tuple(cbt_sources)
