"""Backups against vcsim: CBT on, snapshot always removed, full and incremental, fallbacks."""

from __future__ import annotations

import json
import os

from genievm_vmware.describe import vm_disks
from genievm_vmware.inventory import lookup_vm
from genievm_vmware.testing import get_file, put_file, remove_vm

from genievm_core.errors import ProviderError

MiB = 1 << 20


def backup(cli, opt, vm, repo, *extra):
    return cli("backup", "--vm", vm.name, "--repo", repo, *opt, *extra, "--json").json()


def disks(manifest):
    return {d["name"]: d for d in manifest["disks"]}


def write_disk(vcsim, vm, name, data):
    """The guest's writes, as the test double sees them: the disk's new content, uploaded into its flat extent."""
    path, size = vm.disks[name]
    assert len(data) <= size
    put_file(vcsim, flat(path), data)


def flat(path):
    """Where a disk's data lives on ESXi and on vcsim for disks CreateVM made: ``<name>-flat.vmdk``."""
    return path.removesuffix(".vmdk") + "-flat.vmdk"


def image(size, *pieces):
    """A disk image: zeros (holes) except ``(offset, bytes)`` pieces."""
    buf = bytearray(size)
    for offset, data in pieces:
        buf[offset : offset + len(data)] = data
    return buf


def test_full_then_incremental(cli, opt, vcsim, si, make_vm, repo):
    vm = make_vm([16 * MiB, 8 * MiB])
    first, second = sorted(vm.disks)
    data1 = image(16 * MiB, (0, os.urandom(3 * MiB)), (9 * MiB, os.urandom(MiB // 2)))
    data2 = image(8 * MiB, (4 * MiB, os.urandom(MiB)))
    write_disk(vcsim, vm, first, data1)
    write_disk(vcsim, vm, second, data2)
    assert not vm.vm.config.changeTrackingEnabled

    full = backup(cli, opt, vm, repo)
    assert vm.vm.config.changeTrackingEnabled  # enableCBT (the default) turned it on
    assert vm.genievm_snapshots() == [] and vm.vm.snapshot is None
    assert full["kind"] == "full"
    d = disks(full)
    assert d[first]["cbt"]["token"] and d[second]["cbt"]["token"]
    assert d[first]["stats"]["bytes_read"] == 3 * MiB + MiB // 2  # allocated areas only ('*'), holes not read
    assert d[second]["stats"]["bytes_read"] == MiB
    config = full["vm"]
    assert config["config_format"] == "vsphere-configinfo+xml"
    assert vcsim.password not in json.dumps(full)
    assert config["summary"]["cbt_enabled"] is False  # as described before the backup turned it on

    data1[10 * MiB : 10 * MiB + 4096] = os.urandom(4096)  # one changed 64 KiB block
    write_disk(vcsim, vm, first, data1)
    inc = backup(cli, opt, vm, repo)
    d = disks(inc)
    assert inc["kind"] == "incremental"
    assert d[first]["cbt"]["mode"] == "cbt" and d[first]["cbt"]["source"] == "vsphere-cbt"
    assert d[first]["stats"]["bytes_read"] == 64 << 10
    assert d[first]["stats"]["bytes_scanned"] == MiB  # the one chunk the changed area touches
    assert d[second]["stats"]["bytes_read"] == 0 and d[second]["cbt"]["mode"] == "cbt"
    assert d[first]["cbt"]["token"] != disks(full)[first]["cbt"]["token"]
    assert vm.genievm_snapshots() == []

    # the incremental's index is complete: a restore of it holds the disks as they are now
    new_name = f"{vm.name}-inc"
    cli("restore", "--vm", vm.uuid, "--repo", repo, *opt, "--new-name", new_name)
    restored = lookup_vm(si, new_name)
    try:
        files = [d.path for d in vm_disks(list(restored.config.hardware.device))]
        assert [get_file(vcsim, flat(p)) for p in files] == [bytes(data1), bytes(data2)]
    finally:
        remove_vm(restored)


def test_rejected_change_id_falls_back_to_hash_compare(cli, opt, vcsim, make_vm, repo):
    vm = make_vm([8 * MiB])
    (name,) = vm.disks
    data = image(8 * MiB, (MiB, os.urandom(2 * MiB)))
    write_disk(vcsim, vm, name, data)
    backup(cli, opt, vm, repo)
    vcsim.forget_change_ids()  # the test double's CBT reset: the stored changeId is refused now
    data[5 * MiB : 5 * MiB + 100] = b"x" * 100
    write_disk(vcsim, vm, name, data)
    inc = backup(cli, opt, vm, repo)
    cbt = disks(inc)[name]["cbt"]
    assert cbt["mode"] == "hash-compare"
    assert "refused changeId" in cbt["reason"]
    stats = disks(inc)[name]["stats"]
    assert stats["chunks_new"] == 1, str(stats)  # only the changed chunk is stored
    assert vm.genievm_snapshots() == []


def test_no_cbt_backs_up_by_reading(cli, opt, vcsim, make_vm, repo):
    vm = make_vm([4 * MiB])
    (name,) = vm.disks
    write_disk(vcsim, vm, name, image(4 * MiB, (0, os.urandom(MiB))))
    full = backup(cli, opt, vm, repo, "--no-cbt")
    assert not vm.vm.config.changeTrackingEnabled
    assert disks(full)[name]["cbt"]["token"] is None
    # without CBT the https transport cannot tell holes: the whole flat file is read (zero chunks are not stored)
    assert disks(full)[name]["stats"]["bytes_read"] == 4 * MiB
    assert disks(full)[name]["stats"]["chunks_new"] == 1 and disks(full)[name]["cbt"]["mode"] == "full"


def test_snapshot_removed_when_the_backup_fails(cli, opt, vcsim, make_vm, repo, monkeypatch):
    from genievm_vmware.transport import https

    vm = make_vm([8 * MiB])
    (name,) = vm.disks
    write_disk(vcsim, vm, name, image(8 * MiB, (0, os.urandom(4 * MiB))))
    seen = []
    real_read = https.HTTPSDiskHandle.read

    def failing_read(self, offset, length):
        seen.append(vm.genievm_snapshots())
        if len(seen) == 2:
            raise ProviderError("provider vmware: injected failure mid-backup")
        return real_read(self, offset, length)

    monkeypatch.setattr(https.HTTPSDiskHandle, "read", failing_read)
    result = cli("backup", "--vm", vm.name, "--repo", repo, *opt, check=False)
    assert result.code == 5 and "injected failure mid-backup" in result.err
    assert len(seen[0]) == 1  # the snapshot existed while reading ...
    assert vm.genievm_snapshots() == [] and vm.vm.snapshot is None  # ... and is gone


def test_stale_genievm_snapshot_is_swept(cli, opt, vcsim, make_vm, repo):
    from genievm_vmware.snapshot import create_snapshot

    vm = make_vm([4 * MiB])
    user_snapshot = vm.vm.CreateSnapshot_Task(name="before-upgrade", description="", memory=False, quiesce=False)
    from pyVim.task import WaitForTask

    WaitForTask(user_snapshot)
    create_snapshot(vm.vm, quiesce=False, purpose="backup")  # as a crashed run leaves it
    assert len(vm.genievm_snapshots()) == 1
    # vcsim makes no delta disks, so the backup goes on; on vSphere the https transport refuses a disk with
    # older snapshots (its flat file holds only the base), with a message saying so
    backup(cli, opt, vm, repo)
    assert vm.genievm_snapshots() == []  # the crashed run's snapshot is swept, the backup's own removed
    names = [t.name for t in vm.vm.snapshot.rootSnapshotList]
    assert names == ["before-upgrade"]  # the user's snapshot is not GenieVM's to remove


def test_disk_data_read_back_equals_upload(vcsim, make_vm):
    vm = make_vm([2 * MiB])
    (name,) = vm.disks
    data = os.urandom(2 * MiB)
    write_disk(vcsim, vm, name, data)
    assert get_file(vcsim, flat(vm.disks[name][0])) == data


def test_quiesce_asks_for_a_quiesced_snapshot(cli, opt, vcsim, make_vm, repo, monkeypatch):
    from genievm_vmware.transport import https

    vm = make_vm([2 * MiB])
    (name,) = vm.disks
    write_disk(vcsim, vm, name, image(2 * MiB, (0, os.urandom(MiB))))
    seen = []
    real_read = https.HTTPSDiskHandle.read

    def watching_read(self, offset, length):
        tree = vm.vm.snapshot.rootSnapshotList[0]
        seen.append((tree.quiesced, tree.name, tree.description))
        return real_read(self, offset, length)

    monkeypatch.setattr(https.HTTPSDiskHandle, "read", watching_read)
    backup(cli, opt, vm, repo, "--quiesce")
    quiesced, snapshot, description = seen[0]
    assert quiesced is True and snapshot.startswith("genievm-backup-") and "GenieVM" in description
    assert vm.vm.snapshot is None


def test_a_snapshot_removed_by_someone_else_mid_backup_fails_the_backup(cli, opt, vcsim, make_vm, repo, monkeypatch):
    """Its base disk took writes while being read: the point in time is lost, so the backup must not commit."""
    from genievm_vmware.transport import https
    from pyVim.task import WaitForTask

    vm = make_vm([4 * MiB])
    (name,) = vm.disks
    write_disk(vcsim, vm, name, image(4 * MiB, (0, os.urandom(3 * MiB))))
    real_read = https.HTTPSDiskHandle.read
    removed = []

    def read_then_remove(self, offset, length):
        if not removed:  # another tool (or an operator) removes every snapshot of the VM
            WaitForTask(vm.vm.RemoveAllSnapshots_Task())
            removed.append(True)
        return real_read(self, offset, length)

    monkeypatch.setattr(https.HTTPSDiskHandle, "read", read_then_remove)
    result = cli("backup", "--vm", vm.name, "--repo", repo, *opt, check=False)
    assert result.code == 5, result.err
    assert "internal error" not in result.err
    assert "snapshot" in result.err and "removed" in result.err, result.err
    assert cli("backups", "list", "--repo", repo, "--json").json() == []
