"""A vSphere VM's NVRAM file (on vcsim): kept in the backup byte for byte, and put beside the restored VM."""

from __future__ import annotations

import os

import blake3
from genievm_vmware.inventory import lookup_vm
from genievm_vmware.nvram import nvram_location
from genievm_vmware.testing import DATASTORE, get_file, put_file, remove_vm

MiB = 1 << 20


def test_nvram_is_backed_up_and_restored(cli, opt, vcsim, si, make_vm, repo):
    vm = make_vm([4 * MiB])
    where = nvram_location(vm.vm)
    assert where is not None and where[0] == DATASTORE
    assert where[1].endswith(f"{vm.name}.nvram")  # the file vcsim lists as the VM's nvram
    nvram = b"NVRAM" + os.urandom(8 << 10)  # vcsim's own is empty: give it EFI variables of a kind
    put_file(vcsim, where[1], nvram)

    backup = cli("backup", "--vm", vm.name, "--repo", repo, *opt, "--json").json()
    shown = cli("backups", "show", backup["backup_id"], "--repo", repo, "--json").json()
    [record] = shown["vm"]["files"]
    assert (record["name"], record["size"]) == ("nvram", len(nvram))
    assert record["checksum"] == blake3.blake3(nvram).hexdigest()

    new_name = f"{vm.name}-r"
    cli("restore", "--vm", vm.uuid, "--repo", repo, *opt, "--new-name", new_name)
    restored = lookup_vm(si, new_name)
    assert restored is not None
    try:
        new_where = nvram_location(restored)
        assert new_where is not None and new_where[0] == DATASTORE and new_where[1] != where[1]
        assert get_file(vcsim, new_where[1]) == nvram
    finally:
        remove_vm(restored)
