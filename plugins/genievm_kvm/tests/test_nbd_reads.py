"""Reads over NBD through several connections return what one connection reads, byte for byte, and reads
from several threads go over several connections at once."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from genievm_kvm.nbd_export import NBDClient, qemu_nbd
from genievm_kvm.source import Changes, NBDDiskSource

from genievm_core.errors import ProviderError
from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import ReadsConcurrently

MIB = 1 << 20


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    image = tmp_path / "disk.raw"
    data = os.urandom(9 * MIB + 12288)  # whole sectors: qemu-nbd rounds the size up
    image.write_bytes(data)
    with qemu_nbd(image, "raw", tmp_path / "nbd.sock", export="vda") as sock:
        yield sock, data


def test_reads_through_several_connections_are_the_same_bytes(served) -> None:  # type: ignore[no-untyped-def]
    sock, data = served
    one, several = NBDClient(sock, "vda"), NBDClient(sock, "vda", readers=4)
    try:
        assert (one.connections, several.connections) == (1, 5)  # qemu-nbd --read-only allows multi-conn
        for offset, length in ((0, 4 * MIB), (MIB + 512, 5 * MIB + 4096), (4 * MIB, len(data) - 4 * MIB), (7, 100)):
            expected = data[offset : offset + length]
            assert several.pread(offset, length) == expected == one.pread(offset, length), (offset, length)
    finally:
        one.close()
        several.close()


class WatchedClient(NBDClient):
    """A real client that notes, for each request, its connection and how many were under way at once."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.used: set[int] = set()
        self.most_at_once = self._now = 0
        self._lock = threading.Lock()

    def _read_on(self, h, offset: int, length: int) -> bytes:  # type: ignore[no-untyped-def]
        with self._lock:
            self._now += 1
            self.most_at_once = max(self.most_at_once, self._now)
            self.used.add(id(h))
        try:
            time.sleep(0.005)  # a read that takes a while, as one from a busy server does
            return super()._read_on(h, offset, length)
        finally:
            with self._lock:
                self._now -= 1


def test_reads_from_several_threads_go_over_several_connections_at_once(served) -> None:  # type: ignore[no-untyped-def]
    sock, data = served
    client = WatchedClient(sock, "vda", readers=4)
    source = NBDDiskSource(DiskInfo("vda", len(data), "raw-file"), client, Changes())
    try:
        assert isinstance(source, ReadsConcurrently) and source.concurrent_reads is True
        assert source.allocated_extents() == [Extent(0, len(data))]
        ranges = [(i * MIB, MIB) for i in range(9)] + [(9 * MIB, 12288), (7, 100), (MIB + 512, 5 * MIB + 4096)]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda r: source.read(*r), ranges * 3))
        assert got == [data[offset : offset + length] for offset, length in ranges * 3]
        assert 2 <= client.most_at_once <= 4 and len(client.used) >= 2  # each request on a connection of its own
        assert source.bytes_read == 3 * sum(length for _, length in ranges)
    finally:
        source.close()


def test_a_read_after_close_fails_at_once(served) -> None:  # type: ignore[no-untyped-def]
    """A closed client has no connection left to hand out: a late read is a ProviderError, not a wait for ever."""
    sock, data = served
    client = NBDClient(sock, "vda", readers=4)
    assert client.pread(0, 4096) == data[:4096]
    client.close()
    for _ in range(2):
        with pytest.raises(ProviderError, match="the NBD client is closed"):
            client.pread(0, 4096)


class RecordingHandle:
    """A real libnbd handle whose requests are noted (length, offset)."""

    def __init__(self, h, requests: list[tuple[int, int]]) -> None:  # type: ignore[no-untyped-def]
        self._h, self._requests = h, requests

    def pread(self, count: int, offset: int) -> bytes:
        self._requests.append((count, offset))
        return self._h.pread(count, offset)  # type: ignore[no-any-return]


def test_a_chunk_is_asked_for_in_pieces_qemu_serves_cheaply(served) -> None:  # type: ignore[no-untyped-def]
    """A 4 MiB chunk goes as 1 MiB requests, in order and back to back (QEMU's NBD server spends about twice
    the CPU on 4 MiB requests), and the pieces are joined into the very bytes asked for."""
    sock, data = served
    requests: list[tuple[int, int]] = []

    class Recorded(NBDClient):
        def _read_on(self, h, offset: int, length: int) -> bytes:  # type: ignore[no-untyped-def]
            return super()._read_on(RecordingHandle(h, requests), offset, length)

    client = Recorded(sock, "vda", readers=4)
    try:
        assert client.pread(MIB + 512, 4 * MIB + 4096) == data[MIB + 512 : 5 * MIB + 4608]
        assert requests == [(MIB, MIB + 512 + k * MIB) for k in range(4)] + [(4096, 5 * MIB + 512)]
        requests.clear()
        assert client.pread(7, 100) == data[7:107] and requests == [(100, 7)]
    finally:
        client.close()
