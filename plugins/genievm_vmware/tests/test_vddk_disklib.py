"""The VixDiskLib wrapper (genievm_vmware.vddk) against the VDDK ABI test double over plain files.

The double (tests/vddk_double/vixDiskLibDouble.c) is not VMware's library: it
exports VixDiskLib's functions with VDDK's signatures and error codes and maps
``[datastore] path`` to files under a temporary directory.
"""

from __future__ import annotations

import ctypes
import os
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

sys.path.insert(0, str(Path(__file__).parent))

from genievm_vmware.vddk import Connection, ConnectParams, VixDiskLib, abi  # noqa: E402
from genievm_vmware.vddk.errors import translate  # noqa: E402
from vddk_double import fixtures  # noqa: E402
from vddk_double.fixtures import DATASTORE, HOST, PASSWORD, THUMBPRINT, USER, Double, make_double  # noqa: E402

from genievm_core.errors import AuthenticationError, ProviderError  # noqa: E402
from genievm_core.models.extents import Extent  # noqa: E402

vddk_builds, vddk_env, vddk = fixtures.vddk_builds, fixtures.vddk_env, fixtures.vddk

MiB = 1 << 20
DISK = f"[{DATASTORE}] vm1/vm1.vmdk"


def params(password: str = PASSWORD, thumbprint: str | None = THUMBPRINT) -> ConnectParams:
    return ConnectParams(server=HOST, user=USER, password=password, thumbprint=thumbprint, vmx_spec="moref=vm-42")


def connect(lib: VixDiskLib, *, read_only: bool = True, password: str = PASSWORD) -> Connection:
    snapshot = "snapshot-7" if read_only else None
    return Connection(lib, params(password), read_only=read_only, snapshot=snapshot, modes="nbd")


def test_initex_once_per_process_and_library(vddk: Double) -> None:
    first = VixDiskLib.initialize(vddk.libdir)
    again = VixDiskLib.initialize(vddk.libdir / "lib64")
    assert again is first
    assert vddk.probe.init_count() == 1
    assert "nbd" in first.transport_modes()


def test_no_initex_after_exit(vddk: Double) -> None:
    lib = VixDiskLib.initialize(vddk.libdir)
    lib.exit()
    lib.exit()  # twice is harmless
    with pytest.raises(ProviderError, match="cannot be initialized twice"):
        VixDiskLib.initialize(vddk.libdir)
    assert vddk.probe.init_count() == 1


def test_connect_open_info_round_trip(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", 8 * MiB)
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib) as conn:
        disk = conn.open(DISK)
        info = disk.info()
        assert info.capacity == 8 * MiB == disk.size
        assert info.links == 1 and info.uuid and info.parent_hint is None
        assert info.bios_geometry[1:] == (255, 63)
        assert (info.logical_sector_size, info.physical_sector_size) == (512, 4096)
        assert disk.transport_mode == "file"
        assert (vddk.probe.open_connections(), vddk.probe.open_disks()) == (1, 1)
        seen = vddk.probe.last_connect()
        assert seen["server"] == HOST and seen["user"] == USER and seen["thumbprint"] == THUMBPRINT
        assert seen["vmxSpec"] == "moref=vm-42" and seen["snapshot"] == "snapshot-7"
        assert seen["modes"] == "nbd" and seen["readOnly"] == "1"
    assert disk.closed and not conn.connected
    assert (vddk.probe.open_connections(), vddk.probe.open_disks()) == (0, 0)


def test_read_and_write_round_trip(vddk: Double) -> None:
    file = vddk.disk_file("vm1/vm1.vmdk", 4 * MiB)
    rng = random.Random(5)
    data = rng.randbytes(MiB)
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib, read_only=False) as conn:
        disk = conn.open(DISK, read_only=False)
        disk.write(MiB, data)
        disk.flush()
        assert disk.read(MiB, MiB) == data
        assert disk.read(0, 4096) == bytes(4096)
    assert file.read_bytes()[MiB : 2 * MiB] == data


@pytest.mark.parametrize(("offset", "length"), [(1, 10), (511, 2), (700, 5000), (1024, 513), (3 * 512, 0)])
def test_unaligned_reads_and_writes(vddk: Double, offset: int, length: int) -> None:
    file = vddk.disk_file("vm1/vm1.vmdk", 64 * 1024)
    before = random.Random(offset).randbytes(64 * 1024)
    file.write_bytes(before)
    patch = random.Random(length).randbytes(length)
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib, read_only=False) as conn:
        disk = conn.open(DISK, read_only=False)
        assert disk.read(offset, length) == before[offset : offset + length]
        disk.write(offset, patch)
        assert disk.read(offset, length) == patch
    expected = before[:offset] + patch + before[offset + length :]
    assert file.read_bytes() == expected


def test_allocated_blocks_follow_the_sparse_file(vddk: Double) -> None:
    file = vddk.disk_file("vm1/vm1.vmdk", 64 * MiB)
    written = [Extent(0, 4096), Extent(5 * MiB, 2 * MiB), Extent(20 * MiB + 512, 100), Extent(63 * MiB, MiB)]
    with file.open("r+b") as f:
        for extent in written:
            os.pwrite(f.fileno(), b"\xa5" * extent.length, extent.offset)
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib) as conn:
        disk = conn.open(DISK)
        mib_chunks = disk.allocated_blocks()
        fine = disk.allocated_blocks(chunk_sectors=abi.MIN_CHUNK_SIZE)
    # the file system allocates whole blocks: allow the granularity of the query around what was written
    assert mib_chunks == [Extent(0, MiB), Extent(5 * MiB, 2 * MiB), Extent(20 * MiB, MiB), Extent(63 * MiB, MiB)]
    assert fine is not None
    for extent in written:
        assert any(e.offset <= extent.offset and extent.end <= e.end for e in fine)
    assert sum(e.length for e in fine) < 5 * MiB


def test_allocated_blocks_tail_that_is_not_a_whole_chunk_is_reported(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", 3 * MiB + 4096)
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib) as conn:
        assert conn.open(DISK).allocated_blocks() == [Extent(3 * MiB, 4096)]


def test_allocated_blocks_none_when_not_supported(vddk: Double, monkeypatch: pytest.MonkeyPatch) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    monkeypatch.setenv("GENIEVM_VDDK_DOUBLE_NO_QUERY", "1")
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib) as conn:
        assert conn.open(DISK).allocated_blocks() is None


def test_allocated_blocks_chunk_size_must_be_a_power_of_two_of_128_sectors_or_more(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib) as conn:
        disk = conn.open(DISK)
        for bad in (64, 192):
            with pytest.raises(ValueError, match="power of two"):
                disk.allocated_blocks(chunk_sectors=bad)
        # the library itself refuses a bad chunk size with VIX_E_INVALID_ARG
        block_list = ctypes.POINTER(abi.BlockList)()
        err = lib.library["VixDiskLib_QueryAllocatedBlocks"](disk._handle, 0, 128, 64, ctypes.byref(block_list))
        assert err == 3


def test_library_before_vddk_6_7(vddk_builds: dict[str, Path], vddk_env: Path, tmp_path: Path) -> None:
    old = make_double(vddk_builds["before_6_7"], tmp_path, vddk_env, name="old-vddk")
    old.disk_file("vm1/vm1.vmdk", MiB)
    lib = VixDiskLib.initialize(old.libdir)
    with connect(lib) as conn:  # ConnectParams allocated here: no VixDiskLib_AllocateConnectParams
        disk = conn.open(DISK)
        assert disk.read(0, 512) == bytes(512)
        assert disk.allocated_blocks() is None
    assert old.probe.last_connect()["user"] == USER


def test_wrong_password_is_an_authentication_error_with_the_library_text(vddk: Double) -> None:
    lib = VixDiskLib.initialize(vddk.libdir)
    wrong = "not-the-Pa55word"
    with capture_logs() as logs, pytest.raises(AuthenticationError) as caught:
        connect(lib, password=wrong)
    message = str(caught.value)
    assert message == (
        f"authentication failed for {USER} at {HOST}: VixDiskLib_ConnectEx: Insufficient permissions in the "
        "host operating system (VIX_E_HOST_USER_PERMISSIONS, code 3014)"
    )
    assert caught.value.exit_code == 6
    for text in (message, repr(caught.value), repr(params(wrong)), str(logs)):
        assert wrong not in text and PASSWORD not in text
    assert vddk.probe.open_connections() == 0


def test_password_never_logged_on_success(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    with capture_logs() as logs:
        lib = VixDiskLib.initialize(vddk.libdir)
        with connect(lib) as conn:
            conn.open(DISK).read(0, 512)
    assert PASSWORD not in str(logs)
    # VDDK's own log lines (formatted from its va_list) reach structlog
    messages = [entry.get("message", "") for entry in logs]
    assert f"VixDiskLibDouble: connected to {HOST} as {USER}" in messages


def test_password_hidden_even_if_the_library_logs_it(vddk: Double, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIEVM_VDDK_DOUBLE_LOG_PASSWORD", "1")
    lib = VixDiskLib.initialize(vddk.libdir)
    with capture_logs() as logs:
        connect(lib).disconnect()
    messages = [entry.get("message", "") for entry in logs]
    assert "VixDiskLibDouble: password is ***" in messages
    assert PASSWORD not in str(logs)


def test_wrong_thumbprint_is_a_provider_error(vddk: Double) -> None:
    lib = VixDiskLib.initialize(vddk.libdir)
    with pytest.raises(ProviderError, match=r"thumbprint \(VIX_E_NET_HTTP_SSL_SECURITY, code 30201\)"):
        Connection(lib, params(thumbprint="00:11"), read_only=True, snapshot=None, modes=None)


def test_missing_disk_names_the_path_and_code(vddk: Double) -> None:
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib) as conn:
        with pytest.raises(ProviderError) as caught:
            conn.open(f"[{DATASTORE}] vm9/missing.vmdk")
    assert str(caught.value) == (
        f"provider vmware: VixDiskLib_Open [{DATASTORE}] vm9/missing.vmdk at {HOST}: "
        "The file was not found (VIX_E_FILE_NOT_FOUND, code 4)"
    )
    assert type(caught.value) is ProviderError
    assert vddk.probe.open_connections() == 0


def test_write_to_a_read_only_disk_is_refused(vddk: Double) -> None:
    file = vddk.disk_file("vm1/vm1.vmdk", MiB)
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib) as conn:
        disk = conn.open(DISK)
        with pytest.raises(ProviderError, match=r"VixDiskLib_Write .* \(VIX_E_FILE_READ_ONLY, code 11\)"):
            disk.write(0, b"x" * 512)
        with pytest.raises(ProviderError, match="VIX_E_FILE_READ_ONLY"):
            conn.open(DISK, read_only=False)  # a read-only connection cannot open for writing
    assert file.read_bytes() == bytes(MiB)


def test_read_past_the_end_is_out_of_range(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib) as conn:
        disk = conn.open(DISK)
        with pytest.raises(ProviderError, match=r"out of the range of the disk \(VIX_E_DISK_OUTOFRANGE, code 16007\)"):
            disk.read(MiB - 512, 1024)


def test_calls_before_initex_fail_with_not_initialized(vddk: Double) -> None:
    from genievm_vmware.vddk import load_library

    library = load_library(vddk.libdir)  # loaded, VixDiskLib_InitEx not called
    struct = abi.ConnectParams(serverName=HOST.encode())
    handle = abi.Connection()
    err = library["VixDiskLib_ConnectEx"](ctypes.byref(struct), 1, None, None, ctypes.byref(handle))
    text = ctypes.string_at(library["VixDiskLib_GetErrorText"](err, None)).decode()
    error = translate(err, text, "VixDiskLib_ConnectEx", host=HOST, user=USER)
    assert err == 16001
    assert str(error).endswith("The disk library has not been initialized (VIX_E_DISK_NOINIT, code 16001)")


def test_disconnect_closes_disks_left_open_and_closed_objects_refuse_work(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    vddk.disk_file("vm1/vm1_1.vmdk", MiB)
    lib = VixDiskLib.initialize(vddk.libdir)
    conn = connect(lib)
    first, second = conn.open(DISK), conn.open(f"[{DATASTORE}] vm1/vm1_1.vmdk")
    first.close()
    first.close()
    assert vddk.probe.open_disks() == 1
    conn.disconnect()
    conn.disconnect()
    assert second.closed
    assert (vddk.probe.open_connections(), vddk.probe.open_disks()) == (0, 0)
    with pytest.raises(ProviderError, match="is closed"):
        first.read(0, 512)
    with pytest.raises(ProviderError, match="is closed"):
        conn.open(DISK)


def test_password_buffer_is_zeroed_at_disconnect(vddk: Double) -> None:
    lib = VixDiskLib.initialize(vddk.libdir)
    conn = connect(lib)
    buffer = conn._buffers["password"]
    assert buffer.value == PASSWORD.encode()
    conn.disconnect()
    assert buffer.raw == bytes(len(buffer.raw))


DISK_BYTES = 16 * 1024
_writes = st.lists(
    st.tuples(st.integers(0, DISK_BYTES - 1), st.binary(min_size=0, max_size=3000)).map(
        lambda w: (w[0], w[1][: DISK_BYTES - w[0]])
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=_writes, reads=st.lists(st.tuples(st.integers(0, DISK_BYTES), st.integers(0, 4000)), max_size=6))
def test_byte_writes_and_reads_match_a_bytearray(
    vddk: Double, writes: list[tuple[int, bytes]], reads: list[tuple[int, int]]
) -> None:
    """Any mix of unaligned writes and reads behaves like the same operations on a bytearray."""
    file = vddk.disk_file("vm1/model.vmdk", DISK_BYTES)
    model = bytearray(DISK_BYTES)
    lib = VixDiskLib.initialize(vddk.libdir)
    with connect(lib, read_only=False) as conn:
        disk = conn.open(f"[{DATASTORE}] vm1/model.vmdk", read_only=False)
        for offset, data in writes:
            disk.write(offset, data)
            model[offset : offset + len(data)] = data
        for offset, length in reads:
            length = min(length, DISK_BYTES - offset)
            assert disk.read(offset, length) == model[offset : offset + length]
    assert file.read_bytes() == model
