"""Extents (byte ranges of a disk) and their arithmetic.

An extent is a half-open range ``[offset, offset + length)``. Lists of extents
are kept *normalized*: sorted, non-overlapping, non-adjacent, no empty ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

__all__ = ["Extent", "chunk_indexes", "clip", "intersect", "normalize", "total_length"]


class Extent(NamedTuple):
    """``length`` bytes of a disk starting at ``offset``."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def normalize(extents: Iterable[Extent]) -> list[Extent]:
    """Sort and merge overlapping or adjacent extents, dropping empty ones."""
    merged: list[Extent] = []
    for ext in sorted(e for e in extents if e.length > 0):
        if ext.offset < 0:
            raise ValueError(f"negative extent offset {ext.offset}")
        if merged and ext.offset <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Extent(last.offset, max(last.end, ext.end) - last.offset)
        else:
            merged.append(ext)
    return merged


def intersect(a: Iterable[Extent], b: Iterable[Extent]) -> list[Extent]:
    """The bytes that are in both ``a`` and ``b``, normalized."""
    left, right = normalize(a), normalize(b)
    out: list[Extent] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start = max(left[i].offset, right[j].offset)
        end = min(left[i].end, right[j].end)
        if start < end:
            out.append(Extent(start, end - start))
        if left[i].end < right[j].end:
            i += 1
        else:
            j += 1
    return out


def clip(extents: Iterable[Extent], size: int) -> list[Extent]:
    """``extents`` cut to ``[0, size)``."""
    return intersect(extents, [Extent(0, size)])


def total_length(extents: Iterable[Extent]) -> int:
    return sum(e.length for e in normalize(extents))


def chunk_indexes(extents: Iterable[Extent], chunk_size: int) -> Iterator[int]:
    """Indexes of the chunks that the extents touch, ascending, each once."""
    last = -1
    for ext in normalize(extents):
        first = max(ext.offset // chunk_size, last + 1)
        yield from range(first, (ext.end - 1) // chunk_size + 1)
        last = max(last, (ext.end - 1) // chunk_size)
