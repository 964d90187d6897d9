"""The ``vddk`` DiskTransport (genievm_vmware.transport.vddk) against the VDDK ABI test double.

The double (tests/vddk_double) stands in for VMware's libvixDiskLib.so, which
cannot be downloaded here; it serves ``[datastore] path`` from plain files.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from genievm_vmware.transport import DiskHandle, DiskLocation, DiskTransport  # noqa: E402
from genievm_vmware.transport.vddk import VDDKTransport  # noqa: E402
from vddk_double import fixtures  # noqa: E402
from vddk_double.fixtures import DATASTORE, HOST, PASSWORD, THUMBPRINT, USER, Double  # noqa: E402

from genievm_core.errors import AuthenticationError, ConfigError, ProviderError  # noqa: E402
from genievm_core.models.extents import Extent  # noqa: E402

vddk_builds, vddk_env, vddk = fixtures.vddk_builds, fixtures.vddk_env, fixtures.vddk

MiB = 1 << 20


def transport(double: Double, *, password: str = PASSWORD, mode: str = "nbdssl:nbd") -> DiskTransport:
    return VDDKTransport(
        libdir=double.libdir, host=HOST, user=USER, password=password, thumbprint=THUMBPRINT, mode=mode
    )


def location(
    path: str = "vm1/vm1.vmdk", *, snapshot: str | None = "snapshot-7", capacity: int = 8 * MiB
) -> DiskLocation:
    return DiskLocation(
        vm="vm-42", datacenter="DC0", datastore=DATASTORE, path=path, capacity=capacity, snapshot=snapshot
    )


def test_backup_side_open_read_only_and_read(vddk: Double) -> None:
    file = vddk.disk_file("vm1/vm1.vmdk", 8 * MiB)
    data = random.Random(1).randbytes(2 * MiB)
    with file.open("r+b") as f:
        os.pwrite(f.fileno(), data, 4 * MiB)
    disks = transport(vddk)
    assert disks.name == "vddk"
    handle: DiskHandle = disks.open(location())
    assert handle.size == 8 * MiB
    assert handle.read(4 * MiB, 2 * MiB) == data
    assert handle.read(0, MiB) == bytes(MiB)
    assert handle.allocated_extents() == [Extent(4 * MiB, 2 * MiB)]
    seen = vddk.probe.last_connect()
    assert seen["vmxSpec"] == "moref=vm-42" and seen["snapshot"] == "snapshot-7"
    assert seen["modes"] == "nbdssl:nbd" and seen["readOnly"] == "1"
    with pytest.raises(ProviderError, match="VIX_E_FILE_READ_ONLY"):
        handle.write(0, bytes(512))
    disks.close()
    assert (vddk.probe.open_connections(), vddk.probe.open_disks()) == (0, 0)


def test_restore_side_open_writable_write_and_read_back(vddk: Double) -> None:
    file = vddk.disk_file("vm2/vm2.vmdk", 4 * MiB)
    data = random.Random(2).randbytes(MiB)
    disks = transport(vddk, mode="hotadd")
    handle = disks.open(location("vm2/vm2.vmdk", snapshot=None, capacity=4 * MiB), writable=True)
    seen = vddk.probe.last_connect()
    assert seen["readOnly"] == "0" and seen["snapshot"] == "" and seen["modes"] == "hotadd"
    handle.write(3 * MiB, data)
    assert handle.read(3 * MiB, MiB) == data
    assert isinstance(disks, VDDKTransport) and disks.open_handles == 1
    handle.close()
    handle.close()
    assert disks.open_handles == 0
    disks.close()
    assert file.read_bytes()[3 * MiB :] == data
    assert (vddk.probe.open_connections(), vddk.probe.open_disks()) == (0, 0)


def test_auto_mode_lets_vddk_choose(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    disks = transport(vddk, mode="auto")
    disks.open(location())
    assert vddk.probe.last_connect()["modes"] == ""
    disks.close()


def test_disks_read_in_parallel_threads(vddk: Double) -> None:
    contents = {}
    for n in range(3):
        contents[n] = random.Random(n).randbytes(2 * MiB)
        vddk.disk_file(f"vm1/vm1_{n}.vmdk", 2 * MiB).write_bytes(contents[n])
    disks = transport(vddk)
    handles = [disks.open(location(f"vm1/vm1_{n}.vmdk")) for n in range(3)]
    results: dict[int, bytes] = {}

    def read_all(n: int) -> None:
        results[n] = b"".join(handles[n].read(off, 256 * 1024) for off in range(0, 2 * MiB, 256 * 1024))

    threads = [threading.Thread(target=read_all, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == contents
    assert vddk.probe.open_disks() == 3
    disks.close()
    assert (vddk.probe.open_connections(), vddk.probe.open_disks()) == (0, 0)


def test_failed_open_leaves_no_connection_open(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    disks = transport(vddk)
    kept = disks.open(location())
    with pytest.raises(ProviderError, match=r"VixDiskLib_Open \[LocalDS_0\] vm1/gone.vmdk .*VIX_E_FILE_NOT_FOUND"):
        disks.open(location("vm1/gone.vmdk"))
    assert (vddk.probe.open_connections(), vddk.probe.open_disks()) == (1, 1)
    assert kept.read(0, 512) == bytes(512)
    disks.close()
    assert (vddk.probe.open_connections(), vddk.probe.open_disks()) == (0, 0)


def test_close_after_a_read_error_closes_everything(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    disks = transport(vddk)
    handle = disks.open(location())
    with pytest.raises(ProviderError, match="VIX_E_DISK_OUTOFRANGE"):
        handle.read(MiB, 512)
    disks.close()
    assert (vddk.probe.open_connections(), vddk.probe.open_disks()) == (0, 0)
    with pytest.raises(ProviderError, match="closed"):
        handle.read(0, 512)


def test_a_failing_close_still_disconnects_and_closes_the_other_disks(
    vddk: Double, monkeypatch: pytest.MonkeyPatch
) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    vddk.disk_file("vm1/vm1_1.vmdk", MiB)
    disks = transport(vddk)
    disks.open(location())
    disks.open(location("vm1/vm1_1.vmdk"))
    monkeypatch.setenv("GENIEVM_VDDK_DOUBLE_FAIL_CLOSE", "1")
    with pytest.raises(ProviderError, match=r"VixDiskLib_Close \[LocalDS_0\] vm1/vm1.vmdk .*VIX_E_FILE_ERROR"):
        disks.close()
    assert (vddk.probe.open_connections(), vddk.probe.open_disks()) == (0, 0)
    assert isinstance(disks, VDDKTransport) and disks.open_handles == 0


def test_wrong_password_through_the_transport(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    disks = transport(vddk, password="guess")
    with pytest.raises(AuthenticationError, match=f"authentication failed for {USER} at {HOST}") as caught:
        disks.open(location())
    assert "guess" not in str(caught.value) and "guess" not in repr(disks)
    assert vddk.probe.open_connections() == 0
    disks.close()


def test_one_initex_for_many_transports(vddk: Double) -> None:
    vddk.disk_file("vm1/vm1.vmdk", MiB)
    first, second = transport(vddk), transport(vddk)
    first.open(location())
    second.open(location())
    first.close()
    second.close()
    assert vddk.probe.init_count() == 1


def test_missing_library_fails_when_the_transport_is_made(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"libvixDiskLib.so not found in {tmp_path / 'nowhere' / 'lib64'}"):
        VDDKTransport(libdir=tmp_path / "nowhere", host=HOST, user=USER, password=PASSWORD, thumbprint=None, mode="nbd")


def test_unknown_mode_fails_when_the_transport_is_made(vddk: Double) -> None:
    with pytest.raises(ConfigError, match="'nfs'"):
        transport(vddk, mode="nfs")
