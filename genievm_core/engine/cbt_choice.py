"""Which CBT source answers for a disk: the core's choice, from the registry and the provider's offer.

For each disk of a backup the core takes the registered CBT sources, lets the sources the
disk source offers (``OffersCBTSources.cbt_sources()``, optional) take the place of registered ones
of the same name, and asks the one of highest priority whose ``supports(disk)`` is true.
An offered source is a registered one bound to the backup's point in time (an NBD export's
dirty bitmap, a vSphere snapshot), or the provider's own. When no source supports the disk,
the disk source answers itself (``DiskSource.changed_extents``), as before 0.2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from genievm_core.logging import get_logger
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import CBTSource, ChangedExtents, DiskSource, OffersCBTSources

__all__ = ["changed_since", "choose_cbt_source"]

log = get_logger("genievm.cbt")


def choose_cbt_source(
    disk: DiskInfo, registered: Iterable[CBTSource], offered: Iterable[CBTSource] = ()
) -> CBTSource | None:
    """The highest-priority source that supports ``disk``; an offered source replaces a registered one of its name."""
    by_name = {s.name: s for s in registered} | {s.name: s for s in offered}
    for source in sorted(by_name.values(), key=lambda s: -s.priority):  # stable: registration order breaks ties
        if source.supports(disk):
            return source
    return None


def changed_since(source: DiskSource, token: str | None, registered: Iterable[CBTSource]) -> ChangedExtents:
    """The disk's changes since ``token``, from the CBT source the core chooses for it.

    A ``CBTError`` propagates: the caller falls back to comparing chunk ids and says why.
    """
    offered = source.cbt_sources() if isinstance(source, OffersCBTSources) else ()
    chosen = choose_cbt_source(source.info, registered, offered)
    log.info("backup.cbt_source", disk=source.info.name, kind=source.info.storage_kind, source=_name(chosen))
    if chosen is None:
        return source.changed_extents(token)
    changed = chosen.changed_extents(source.info, token)
    return changed if changed.extents is None or changed.source else replace(changed, source=chosen.name)


def _name(source: CBTSource | None) -> str:
    return source.name if source else "none (the disk source answers)"
