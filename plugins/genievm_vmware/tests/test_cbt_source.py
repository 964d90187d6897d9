"""``vsphere-cbt``: registered like any CBT source, chosen by the core, and, bound to a backup's
snapshot as each disk source offers it, passing GenieVM's CBT source contract against vcsim."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from genievm_vmware.provider import VMwareProvider
from genievm_vmware.testing import Vcsim, put_file

from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import BackupRequest, CBTSource
from genievm_core.testing import CBTCase, CBTSourceContract

MiB = 1 << 20


def test_vsphere_cbt_is_registered_by_the_vmware_plugin() -> None:
    host = PluginHost()
    assert {r.name: r.plugin for r in host.cbt_sources}["vsphere-cbt"] == "vmware"
    registered = host.cbt_sources.get("vsphere-cbt")
    disk = DiskInfo("disk-2000", 8 * MiB, "vmdk", details={"device_key": "2000"})
    assert registered.supports(disk) and not registered.supports(DiskInfo("vda", MiB, "qcow2-file"))
    alone = registered.changed_extents(disk, "52 1c 3f/4")  # no snapshot, no session: never a guess
    assert alone.extents is None and "only within a backup's snapshot" in (alone.reason or "")


class TestBoundVSphereCBT(CBTSourceContract):
    """The source as the core gets it during a backup: offered by the disk source, bound to its snapshot."""

    @pytest.fixture
    def open_disk(
        self, cli: Callable[..., Any], opt: list[str], vcsim: Vcsim, make_vm: Callable[..., Any], repo: str
    ) -> Iterator[tuple[Any, str]]:
        vm = make_vm([8 * MiB])
        ((name, (path, size)),) = vm.disks.items()
        flat = path.removesuffix(".vmdk") + "-flat.vmdk"
        data = bytearray(size)
        data[MiB : 3 * MiB] = os.urandom(2 * MiB)
        put_file(vcsim, flat, bytes(data))
        manifest = cli("backup", "--vm", vm.name, "--repo", repo, *opt, "--json").json()
        token = manifest["disks"][0]["cbt"]["token"]
        data[5 * MiB : 5 * MiB + 4096] = os.urandom(4096)
        put_file(vcsim, flat, bytes(data))
        options = {"host": vcsim.host, "port": vcsim.port, "user": vcsim.user, "password": vcsim.password}
        provider = VMwareProvider({**options, "caFile": str(vcsim.ca_file)})
        try:
            desc = provider.describe_vm(vm.uuid)
            with provider.open_backup(desc, BackupRequest(disks=(name,), tokens={name: token})) as session:
                yield session.sources()[name], token
        finally:
            provider.close()

    @pytest.fixture
    def cbt_source(self, open_disk: tuple[Any, str]) -> CBTSource:
        (bound,) = open_disk[0].cbt_sources()
        return bound  # type: ignore[no-any-return]

    @pytest.fixture
    def cbt_case(self, open_disk: tuple[Any, str]) -> CBTCase:
        source, token = open_disk
        return CBTCase(source.info, token, [Extent(5 * MiB, 4096)])
