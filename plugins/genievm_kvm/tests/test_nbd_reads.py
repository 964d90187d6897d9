"""Reads over NBD split over several connections return what one connection reads, byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from genievm_kvm.nbd_export import NBDClient, qemu_nbd

MIB = 1 << 20


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    image = tmp_path / "disk.raw"
    data = os.urandom(9 * MIB + 12345)
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
