"""Extent and chunk arithmetic against a brute-force model: a set of byte offsets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genievm_core.models.extents import Extent, chunk_indexes, clip, intersect, normalize, total_length

extent = st.builds(Extent, st.integers(0, 300), st.integers(0, 60))
extents = st.lists(extent, max_size=12)
chunk_size = st.integers(1, 70)


def as_set(exts: list[Extent]) -> set[int]:
    return {b for e in exts for b in range(e.offset, e.offset + max(e.length, 0))}


def assert_normalized(exts: list[Extent]) -> None:
    for e in exts:
        assert e.length > 0 and e.offset >= 0
    for a, b in zip(exts, exts[1:], strict=False):
        assert a.end < b.offset, f"{a} and {b} overlap, touch or are out of order"


@given(extents)
def test_normalize_covers_the_same_bytes_and_is_normalized(exts: list[Extent]) -> None:
    out = normalize(exts)
    assert as_set(out) == as_set(exts)
    assert_normalized(out)
    assert all(isinstance(e, Extent) for e in out)


@given(extents)
def test_normalize_is_idempotent_and_order_independent(exts: list[Extent]) -> None:
    out = normalize(exts)
    assert normalize(out) == out
    assert normalize(reversed(exts)) == out


@given(extents, extents)
def test_intersect_is_set_intersection(a: list[Extent], b: list[Extent]) -> None:
    out = intersect(a, b)
    assert as_set(out) == as_set(a) & as_set(b)
    assert_normalized(out)
    assert out == intersect(b, a)


@given(extents, st.integers(0, 400))
def test_clip_cuts_to_the_disk(exts: list[Extent], size: int) -> None:
    out = clip(exts, size)
    assert as_set(out) == {b for b in as_set(exts) if b < size}
    assert_normalized(out)


@given(extents)
def test_total_length_counts_each_byte_once(exts: list[Extent]) -> None:
    assert total_length(exts) == len(as_set(exts))


@given(extents, chunk_size)
def test_chunk_indexes_are_the_chunks_touched_ascending_once(exts: list[Extent], size: int) -> None:
    out = list(chunk_indexes(exts, size))
    assert out == sorted({b // size for b in as_set(exts)})


@given(extents, extents, st.integers(1, 1 << 30))
def test_large_offsets_scale_like_small_ones(a: list[Extent], b: list[Extent], scale: int) -> None:
    """Disk-sized numbers (up to ~2^40) behave like the small ones: the operations commute with scaling."""

    def up(exts: list[Extent]) -> list[Extent]:
        return [Extent(e.offset * scale, e.length * scale) for e in exts]

    assert normalize(up(a)) == up(normalize(a))
    assert intersect(up(a), up(b)) == up(intersect(a, b))
    assert total_length(up(a)) == scale * total_length(a)
    # with chunks as large as the scale, chunk i of the scaled extents is byte i of the small ones
    assert list(chunk_indexes(up(a), scale)) == sorted(as_set(a))


@given(st.lists(extent, min_size=1, max_size=5), st.integers(1, 1000), st.integers(1, 100))
def test_negative_offsets_are_refused(exts: list[Extent], offset: int, length: int) -> None:
    with pytest.raises(ValueError, match="negative"):
        normalize([*exts, Extent(-offset, length)])


def test_extent_end() -> None:
    assert Extent(10, 5).end == 15
    assert normalize([Extent(0, 0), Extent(5, 0)]) == []
    assert list(chunk_indexes([], 4096)) == []
    assert list(chunk_indexes([Extent(4095, 2)], 4096)) == [0, 1]
    assert list(chunk_indexes([Extent(4096, 4096)], 4096)) == [1]
