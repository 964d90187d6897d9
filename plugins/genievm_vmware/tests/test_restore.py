"""Restores against vcsim: a new VM whose disks hold the backed-up bytes; never over an existing VM unasked."""

from __future__ import annotations

import os

from genievm_vmware.inventory import lookup_vm
from genievm_vmware.testing import get_file, put_file, remove_vm

MiB = 1 << 20


def flat(path):
    return path.removesuffix(".vmdk") + "-flat.vmdk"


def disk_files(vm):
    from genievm_vmware.describe import vm_disks

    return [(d.path, d.capacity) for d in vm_disks(list(vm.config.hardware.device))]


def test_restore_to_a_new_vm(cli, opt, vcsim, si, make_vm, repo):
    vm = make_vm([8 * MiB, 4 * MiB])
    data = {}
    for (name, (path, size)), fill in zip(sorted(vm.disks.items()), (3, 1), strict=True):
        buf = bytearray(size)
        buf[MiB : MiB + fill * MiB] = os.urandom(fill * MiB)
        put_file(vcsim, flat(path), bytes(buf))
        data[name] = bytes(buf)
    cli("backup", "--vm", vm.name, "--repo", repo, *opt)

    new_name = f"{vm.name}-restored"
    result = cli("restore", "--vm", vm.uuid, "--repo", repo, *opt, "--new-name", new_name, "--power-on", "--json")
    restored = lookup_vm(si, new_name)
    assert restored is not None
    try:
        assert result.json()["vm_id"] == restored.config.instanceUuid != vm.uuid
        assert restored.runtime.powerState == "poweredOn"
        assert restored.config.hardware.numCPU == vm.vm.config.hardware.numCPU
        assert restored.config.hardware.memoryMB == vm.vm.config.hardware.memoryMB
        files = disk_files(restored)
        assert [size for _, size in files] == [8 * MiB, 4 * MiB]
        for (path, _), name in zip(files, sorted(data), strict=True):
            assert get_file(vcsim, flat(path)) == data[name]
        nics = [d for d in restored.config.hardware.device if hasattr(d, "macAddress")]
        assert len(nics) == 1
    finally:
        remove_vm(restored)


def test_restore_never_touches_an_existing_vm_without_force(cli, opt, vcsim, si, make_vm, repo):
    vm = make_vm([4 * MiB])
    ((name, (path, size)),) = vm.disks.items()
    before = os.urandom(size)
    put_file(vcsim, flat(path), before)
    cli("backup", "--vm", vm.name, "--repo", repo, *opt)
    after = os.urandom(size)
    put_file(vcsim, flat(path), after)  # changed since the backup

    restore = ["restore", "--vm", vm.uuid, "--repo", repo, *opt, "--new-name", vm.name]
    result = cli(*restore, check=False)
    assert result.code == 23, result.err
    assert result.err.strip() == f"genievm: error: VM {vm.name} exists; pass --force to restore its disks into it"
    assert get_file(vcsim, flat(path)) == after  # untouched

    cli(*restore, "--force")  # into the stopped VM itself
    assert get_file(vcsim, flat(path)) == before
    assert [v.name for v in si.content.viewManager.CreateContainerView(
        si.content.rootFolder, [type(vm.vm)], True).view if v.name == vm.name] == [vm.name]  # fmt: skip


def test_failed_restore_removes_the_new_vm(cli, opt, vcsim, si, make_vm, repo, monkeypatch):
    from genievm_vmware.transport import https

    from genievm_core.errors import ProviderError

    vm = make_vm([4 * MiB])
    ((_, (path, size)),) = vm.disks.items()
    put_file(vcsim, flat(path), os.urandom(size))
    cli("backup", "--vm", vm.name, "--repo", repo, *opt)

    def failing_upload(self):
        raise ProviderError("provider vmware: injected failure while writing")

    monkeypatch.setattr(https.HTTPSDiskHandle, "_upload", failing_upload)
    new_name = f"{vm.name}-broken"
    result = cli("restore", "--vm", vm.uuid, "--repo", repo, *opt, "--new-name", new_name, check=False)
    assert result.code == 5 and "injected failure while writing" in result.err
    assert lookup_vm(si, new_name) is None


def test_https_restore_stages_disks_under_target(cli, opt, vcsim, si, make_vm, repo, monkeypatch, tmp_path):
    from genievm_vmware.transport import https

    vm = make_vm([2 * MiB])
    ((_, (path, size)),) = vm.disks.items()
    put_file(vcsim, flat(path), os.urandom(size))
    cli("backup", "--vm", vm.name, "--repo", repo, *opt)
    staged = []
    real_write = https.HTTPSDiskHandle.write

    def watching_write(self, offset, data):
        staged.append(self._scratch.name)
        return real_write(self, offset, data)

    monkeypatch.setattr(https.HTTPSDiskHandle, "write", watching_write)
    target = tmp_path / "staging"
    target.mkdir()
    new_name = f"{vm.name}-staged"
    cli("restore", "--vm", vm.uuid, "--repo", repo, *opt, "--new-name", new_name, "--target", str(target))
    remove_vm(lookup_vm(si, new_name))
    assert staged and all(os.path.dirname(name) == str(target) for name in staged)
    assert list(target.iterdir()) == []  # the staging file is gone


def test_https_restore_makes_a_missing_target_and_refuses_an_unusable_one(cli, opt, vcsim, si, make_vm, repo, tmp_path):
    """Regression: a --target folder that did not exist crashed the restore with a FileNotFoundError traceback."""
    vm = make_vm([2 * MiB])
    ((_, (path, size)),) = vm.disks.items()
    data = os.urandom(size)
    put_file(vcsim, flat(path), data)
    cli("backup", "--vm", vm.name, "--repo", repo, *opt)

    target = tmp_path / "not" / "yet"
    new_name = f"{vm.name}-made"
    cli("restore", "--vm", vm.uuid, "--repo", repo, *opt, "--new-name", new_name, "--target", str(target))
    restored = lookup_vm(si, new_name)
    try:
        assert get_file(vcsim, flat(disk_files(restored)[0][0])) == data
    finally:
        remove_vm(restored)
    assert target.is_dir() and list(target.iterdir()) == []

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    broken = f"{vm.name}-nowhere"
    result = cli("restore", "--vm", vm.uuid, "--repo", repo, *opt, "--new-name", broken,
                 "--target", str(a_file / "staging"), check=False)  # fmt: skip
    assert result.code == 5, result.err
    assert result.err.strip().startswith("genievm: error: provider vmware: cannot stage a disk in "), result.err
    assert lookup_vm(si, broken) is None  # the half-restored VM is removed


# ---------------------------------------------------------------- network cards (issue 15, defect 7)


def nics(vm):
    """(backing kind, network) of each card of a live VM."""
    from genievm_vmware.networks import backing_networks

    return [backing_networks(d.backing) for d in vm.config.hardware.device if hasattr(d, "macAddress")]


def restored_nics(cli, si, restore, new_name, *options):
    """Restore as ``new_name`` with ``options``, then the new VM's cards; the VM is removed."""
    cli(*restore, "--new-name", new_name, *options)
    vm = lookup_vm(si, new_name)
    assert vm is not None
    try:
        return nics(vm)
    finally:
        remove_vm(vm)


def test_the_simulators_own_vm_on_a_distributed_port_group(cli, opt, vcsim, si, repo):
    """The repro: vcsim's DC0_C0_RP0_VM0, its card on the distributed port group DC0_DVPG0."""
    made = cli("backup", "--vm", "DC0_C0_RP0_VM0", "--repo", repo, *opt, "--json").json()
    restore = ["restore", "--vm", "DC0_C0_RP0_VM0", "--repo", repo, *opt]
    assert restored_nics(cli, si, restore, "r1-as-is") == [("distributed", ["dvportgroup-13"])]
    summary = made["vm"]["summary"]
    assert (summary["nic.4000.backing"], summary["nic.4000.network"]) == ("distributed", "DC0_DVPG0")
    assert restored_nics(cli, si, restore, "r1-mapped", "-o", "networkMap=DC0_DVPG0=VM Network") == [
        ("standard", ["VM Network"])
    ]
    assert restored_nics(cli, si, restore, "r1-no-nics", "-o", "noNics=true") == []
    assert restored_nics(cli, si, restore, "r1-dropped", "-o", "networkMap=DC0_DVPG0=") == []


def test_a_card_that_names_no_network_is_mapped_or_given_a_default(cli, opt, vcsim, si, repo, monkeypatch):
    """A backup made before the fix (stored config of the ConfigInfo type's own API version, no cards in the
    summary) kept a distributed card's backing empty, as a card whose network was deleted names none: the
    restore says how to map it, and then maps it."""
    from genievm_vmware import describe
    from pyVmomi import SoapAdapter

    monkeypatch.setattr(describe, "serialize_config", lambda config, vm: SoapAdapter.Serialize(config))
    monkeypatch.setattr(describe, "nic_summary", lambda devices, dc: {})
    cli("backup", "--vm", "DC0_C0_RP0_VM0", "--repo", repo, *opt)
    restore = ["restore", "--vm", "DC0_C0_RP0_VM0", "--repo", repo, *opt]
    refused = cli(*restore, "--new-name", "r2", check=False)
    assert refused.code == 3, refused.err
    assert "network '' (card ethernet-0, a backing that names no network) is not in datacenter DC0" in refused.err
    assert "-o 'networkMap==TARGET'" in refused.err and "defaultNetwork" in refused.err and "noNics" in refused.err
    assert lookup_vm(si, "r2") is None
    assert restored_nics(cli, si, restore, "r2-mapped", "-o", "networkMap==VM Network") == [
        ("standard", ["VM Network"])
    ]
    assert restored_nics(cli, si, restore, "r2-default", "-o", "defaultNetwork=DC0_DVPG0") == [
        ("distributed", ["dvportgroup-13"])
    ]


def test_an_opaque_network_card_is_recorded_and_mapped(cli, opt, vcsim, si, make_vm, repo):
    """An NSX segment's card (``OpaqueNetworkBackingInfo``; vcsim keeps it, though it has no NSX)."""
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    vm = make_vm([MiB])
    backing = vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo(
        opaqueNetworkId="nsx-segment-7", opaqueNetworkType="nsx.LogicalSwitch"
    )
    card = vim.vm.device.VirtualVmxnet3(key=-101, addressType="generated", backing=backing)
    add = vim.vm.device.VirtualDeviceSpec(operation="add", device=card)
    WaitForTask(vm.vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[add])))
    assert sorted(nics(vm.vm)) == [("opaque", ["nsx-segment-7"]), ("standard", ["VM Network"])]

    summary = cli("backup", "--vm", vm.name, "--repo", repo, *opt, "--json").json()["vm"]["summary"]
    assert sorted(v for k, v in summary.items() if k.endswith(".backing")) == ["opaque", "standard"]
    assert sorted(v for k, v in summary.items() if k.endswith(".network")) == ["VM Network", "nsx-segment-7"]
    restore = ["restore", "--vm", vm.uuid, "--repo", repo, *opt]
    refused = cli(*restore, "--new-name", f"{vm.name}-r", check=False)
    assert refused.code == 3 and "opaque backing on 'nsx-segment-7')" in refused.err, refused.err
    assert restored_nics(cli, si, restore, f"{vm.name}-m", "-o", "networkMap=nsx-segment-7=VM Network") == [
        ("standard", ["VM Network"]), ("standard", ["VM Network"])
    ]
