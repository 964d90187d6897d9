"""A disk at a backup's point in time, read over NBD."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from genievm_core.engine import CountingDiskSource, DiskSources
from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import BoundCBTSource, CBTSource, ChangedExtents
from genievm_kvm.nbd_export import NBDClient, PendingRead

__all__ = ["Changes", "NBDDiskSource", "Session"]

_LONGEST = 1 << 63  # sorts after any extent's length


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

    Reads come in ascending order (the ``DiskSource`` contract). When one read follows the
    last where it ended and the same length after it is allocated, that next range is read
    ahead while the caller works on this one: in a full backup, exactly the next chunk.
    """

    def __init__(self, info: DiskInfo, client: NBDClient, changes: Changes) -> None:
        super().__init__(info, self._read_in_order, self._close)
        self._client = client
        self._changes = changes
        self.offered: tuple[CBTSource, ...] = ()  # the plugin's CBT sources, bound to this export by cbt_sources
        self._allocated: list[Extent] = []
        self._end = -1  # where the last read ended
        self._ahead: PendingRead | None = None

    def allocated_extents(self) -> list[Extent]:
        self._allocated = self._client.allocated()
        return self._allocated

    def _read_in_order(self, offset: int, length: int) -> bytes:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and (ahead.offset, ahead.length) != (offset, length):
            ahead.drop()
            ahead = None
        pending = ahead or self._client.start_read(offset, length)
        nxt = offset + length
        if offset == self._end and self._client.reads_ahead(length) and self._is_allocated(nxt, length):
            self._ahead = self._client.start_read(nxt, length)
        self._end = nxt
        return pending.result()

    def _is_allocated(self, offset: int, length: int) -> bool:
        i = bisect_right(self._allocated, (offset, _LONGEST)) - 1
        return i >= 0 and self._allocated[i].offset <= offset and offset + length <= self._allocated[i].end

    def _close(self) -> None:
        if self._ahead is not None:
            self._ahead.drop()
            self._ahead = None
        self._client.close()

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
