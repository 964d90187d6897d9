"""Reads over NBD split over several connections return what one connection reads, byte for byte;
reads in sequence read the next range ahead, and one that is not wanted is dropped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from genievm_kvm.nbd_export import NBDClient, PendingRead, qemu_nbd
from genievm_kvm.source import Changes, NBDDiskSource

from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo

MIB = 1 << 20


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    image = tmp_path / "disk.raw"
    data = os.urandom(9 * MIB + 12288)  # whole sectors: qemu-nbd rounds the size up
    image.write_bytes(data)
    with qemu_nbd(image, "raw", tmp_path / "nbd.sock", export="vda") as sock:
        yield sock, data


def test_a_read_split_over_connections_is_the_same_bytes(served) -> None:  # type: ignore[no-untyped-def]
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


class RecordingClient(NBDClient):
    """A real client that notes each read it starts."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.started: list[tuple[int, int]] = []

    def start_read(self, offset: int, length: int) -> PendingRead:
        self.started.append((offset, length))
        return super().start_read(offset, length)


def test_reads_in_sequence_read_the_next_chunk_ahead_and_a_skip_drops_it(served) -> None:  # type: ignore[no-untyped-def]
    sock, data = served
    client = RecordingClient(sock, "vda", readers=4)
    source = NBDDiskSource(DiskInfo("vda", len(data), "raw-file"), client, Changes())
    try:
        assert source.allocated_extents() == [Extent(0, len(data))]
        chunk = 2 * MIB
        assert source.read(0, chunk) == data[:chunk]
        assert source.read(chunk, chunk) == data[chunk : 2 * chunk]
        assert client.started[-1] == (2 * chunk, chunk)  # the next chunk, read ahead
        assert source.read(3 * chunk, chunk) == data[3 * chunk : 4 * chunk]  # not the one read ahead
        assert source.read(4 * chunk, 100) == data[4 * chunk : 4 * chunk + 100]
        assert client.started == [(0, chunk), (chunk, chunk), (2 * chunk, chunk), (3 * chunk, chunk), (4 * chunk, 100)]
        last = len(data) - chunk  # ahead only where the whole next range is allocated: not past the end
        assert source.read(last - chunk, chunk) == data[last - chunk : last]
        assert source.read(last, chunk) == data[last:]
        assert client.started[-1] == (last, chunk)
        assert source.bytes_read == 5 * chunk + 100
    finally:
        source.close()
