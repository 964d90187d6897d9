"""The same provider against a standalone ESXi host (vcsim's ESX model: datacenter ``ha-datacenter``)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from genievm_vmware.describe import vm_disks
from genievm_vmware.inventory import lookup_vm
from genievm_vmware.testing import Vcsim, get_file, put_file, remove_vm, scratch_vm, start_vcsim

MiB = 1 << 20


@pytest.fixture(scope="module")
def esx(vcsim: Vcsim) -> Iterator[Vcsim]:  # vcsim first: it skips when the simulator cannot be built
    with start_vcsim(esx=True) as sim:
        yield sim


def flat(path):
    return path.removesuffix(".vmdk") + "-flat.vmdk"


def test_backup_and_restore_on_esxi(cli, esx, repo):
    opt = ["--provider", "vmware", *esx.options()]
    with esx.connect() as si:
        assert si.content.about.apiType == "HostAgent"
        vm = scratch_vm(si, f"genievm-test-{secrets.token_hex(3)}", [4 * MiB])
        restored = None
        try:
            (disk,) = vm_disks(list(vm.config.hardware.device))
            data = bytearray(4 * MiB)
            data[MiB : 2 * MiB] = os.urandom(MiB)
            put_file(esx, flat(disk.path), bytes(data))
            full = cli("backup", "--vm", vm.name, "--repo", repo, *opt, "--json", password=esx.password).json()
            assert full["vm"]["summary"]["datacenter"] == "ha-datacenter"
            assert full["disks"][0]["stats"]["bytes_read"] == MiB
            data[3 * MiB : 3 * MiB + 10] = b"0123456789"
            put_file(esx, flat(disk.path), bytes(data))
            inc = cli("backup", "--vm", vm.name, "--repo", repo, *opt, "--json", password=esx.password).json()
            assert inc["disks"][0]["cbt"]["mode"] == "cbt" and inc["disks"][0]["stats"]["bytes_read"] == 64 << 10

            new_name = f"{vm.name}-r"
            uuid = vm.config.instanceUuid
            cli("restore", "--vm", uuid, "--repo", repo, *opt, "--new-name", new_name, password=esx.password)
            restored = lookup_vm(si, new_name)
            (new_disk,) = vm_disks(list(restored.config.hardware.device))
            assert get_file(esx, flat(new_disk.path)) == bytes(data)
        finally:
            remove_vm(vm)
            if restored is not None:
                remove_vm(restored)
