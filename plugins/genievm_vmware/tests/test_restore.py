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
