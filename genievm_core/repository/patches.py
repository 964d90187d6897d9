"""Patched chunks: a chunk stored as the bytes that changed over another chunk.

A CBT incremental that changed a few KiB of a 4 MiB chunk need not store the
whole chunk again. In a repository with the feature ``patched-chunks``, it
stores a *patch*: an ordinary chunk object whose plaintext lists the changed
extents and their bytes. The chunk's index entry keeps the chunk's own id
(the keyed BLAKE3 of its whole content, so every check by content stands),
and the index's patch table says where the content comes from: a *base*
(a stored chunk, or the zero chunk) with the patch written over it.

A base is never itself patched: a patch over a patched chunk is made over
that chunk's base, with the extents of both (``merge``). Layout of a patch's
plaintext (little-endian)::

    magic "GVMP" | version u8 = 1 | 3 reserved zero bytes
    length u64 (the patched chunk's length) | count u64
    count pairs (offset u64, size u64): ascending, apart, inside length, size > 0
    the bytes of each extent, in that order
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple

from genievm_core.repository.objects import ObjectDamaged

__all__ = ["PATCHED_CHUNKS", "PatchRef", "Span", "apply_patch", "encode_patch", "merge"]

PATCHED_CHUNKS = "patched-chunks"  # the repository feature: indexes may have a patch table
_HEADER = struct.Struct("<4sB3xQQ")
_PAIR = struct.Struct("<QQ")
_MAGIC = b"GVMP"

Span = tuple[int, int]  # [start, end) inside the chunk


class PatchRef(NamedTuple):
    """Where a patched chunk's content comes from: its base's id (``ZERO_ID``: zeros) and its patch's id."""

    base: bytes
    patch: bytes


def merge(*spans: Iterable[Span]) -> list[Span]:
    """The union of the spans, ascending, touching ones joined."""
    out: list[Span] = []
    for start, end in sorted(s for group in spans for s in group if s[1] > s[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def encode_patch(chunk: bytes, spans: list[Span]) -> bytes:
    """The patch that turns a base into ``chunk`` where ``spans`` (from ``merge``) cover every difference."""
    head = _HEADER.pack(_MAGIC, 1, len(chunk), len(spans))
    table = b"".join(_PAIR.pack(start, end - start) for start, end in spans)
    view = memoryview(chunk)
    return b"".join([head, table, *(view[start:end] for start, end in spans)])


def _parse(payload: bytes) -> tuple[int, list[Span], int]:
    """The chunk's length, the patch's spans and where their bytes begin; raises on anything malformed."""
    if len(payload) < _HEADER.size:
        raise ObjectDamaged("patch truncated")
    magic, version, length, count = _HEADER.unpack_from(payload)
    if magic != _MAGIC or version != 1:
        raise ObjectDamaged("not a version 1 patch")
    data_at = _HEADER.size + count * _PAIR.size
    if data_at > len(payload):
        raise ObjectDamaged(f"patch of {count} extents truncated")
    spans: list[Span] = []
    end = 0
    for k in range(count):
        offset, size = _PAIR.unpack_from(payload, _HEADER.size + k * _PAIR.size)
        if size == 0 or offset < end or offset + size > length:
            raise ObjectDamaged("patch extents out of order or outside the chunk")
        spans.append((offset, offset + size))
        end = offset + size
    if data_at + sum(e - s for s, e in spans) != len(payload):
        raise ObjectDamaged("patch length does not match its extents")
    return length, spans, data_at


def apply_patch(base: bytes | None, payload: bytes) -> tuple[bytes, list[Span]]:
    """The patched chunk, ``base`` (None: zeros) with the patch written over it, and the spans the patch covers."""
    length, spans, at = _parse(payload)
    if base is not None and len(base) != length:
        raise ObjectDamaged(f"patch of a {length}-byte chunk over a base of {len(base)} bytes")
    out = bytearray(length) if base is None else bytearray(base)
    view = memoryview(payload)
    for start, end in spans:
        out[start:end] = view[at : at + end - start]
        at += end - start
    return bytes(out), spans
