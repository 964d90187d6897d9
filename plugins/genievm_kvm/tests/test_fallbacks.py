"""Stopped VMs, broken or missing checkpoints, raw disks, two repositories, the internal-snapshot path."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import libvirt
from genievm_kvm.testing import remove_vm, scratch_domain_xml
from kvm_support import URI, MiB, TestVM, guest_write, raw_copy, same_content

OPT = ["--provider", "kvm", "-o", f"uri={URI}"]


def backup(cli, vm, repo, *extra):
    return cli("backup", "--vm", vm.name, "--repo", repo, *OPT, *extra, "--json").json()


def disks(manifest):
    return {d["name"]: d for d in manifest["disks"]}


def restore_as(cli, vm_id, repo, folder, new_name, *extra):
    """Restore the latest backup of ``vm_id`` as a new VM ``new_name`` with its disks in ``folder``."""
    target = ["--target", str(folder), "--new-name", new_name]
    return cli("restore", "--vm", vm_id, "--repo", repo, *OPT, *target, *extra, "--json")


def bitmaps(image):
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(image)], capture_output=True, check=True)
    return [b["name"] for b in json.loads(out.stdout)["format-specific"]["data"].get("bitmaps", [])]


def test_stopped_vm_incremental_from_bitmap(make_vm, cli, repo, tmp_path):
    vm = make_vm(running=False)
    run = tmp_path / "run"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 2M 1M", str(vm.disks["vda"])], check=True)
    full = backup(cli, vm, repo, "-o", f"runDir={run}")
    token = disks(full)["vda"]["cbt"]["token"]
    assert full["kind"] == "full" and bitmaps(vm.disks["vda"]) == [token]
    assert full["vm"]["summary"]["cbt_source.vda"] == "qcow2-bitmap"

    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x6b 20M 4k", str(vm.disks["vda"])], check=True)
    inc = backup(cli, vm, repo, "-o", f"runDir={run}")
    vda = disks(inc)["vda"]
    assert vda["cbt"]["mode"] == "cbt" and vda["cbt"]["source"] == "qcow2-bitmap"
    assert vda["stats"]["bytes_scanned"] == 1 * MiB  # the one chunk the write touched
    assert bitmaps(vm.disks["vda"]) == [vda["cbt"]["token"]]  # the parent's bitmap is removed
    assert list(run.iterdir()) == []  # no socket left

    expected = raw_copy(vm.disks["vda"], tmp_path / "vda.raw")
    restore_as(cli, vm.uuid, repo, tmp_path / "r", f"{vm.name}-r", "--disk-format", "vda=raw")
    assert same_content(tmp_path / "r" / f"{vm.name}-r-vda.raw", expected)
    remove_vm(vm.dom.connect().lookupByName(f"{vm.name}-r"))


def test_deleted_checkpoint_falls_back_to_hash_compare(make_vm, cli, repo):
    vm = make_vm()
    guest_write(vm, 0, 0x21, 0, 2 * MiB)
    token = disks(backup(cli, vm, repo))["vda"]["cbt"]["token"]
    vm.dom.checkpointLookupByName(token).delete()
    guest_write(vm, 0, 0x22, 10 * MiB, 4096)
    vda = disks(backup(cli, vm, repo))["vda"]
    assert vda["cbt"]["mode"] == "hash-compare"
    assert f"checkpoint {token} is not on the VM" in vda["cbt"]["reason"]
    assert vda["stats"]["chunks_new"] == 1  # only the changed chunk is stored again
    assert [c.getName() for c in vm.dom.listAllCheckpoints()] == [vda["cbt"]["token"]]


def test_raw_disks_use_hash_compare_and_no_checkpoint(make_vm, cli, repo):
    vm = make_vm({"vda": (16 * MiB, "raw")})
    guest_write(vm, 0, 0x33, 0, MiB)
    full = backup(cli, vm, repo)
    assert disks(full)["vda"]["cbt"]["token"] is None and vm.dom.listAllCheckpoints() == []
    inc = disks(backup(cli, vm, repo))["vda"]
    assert inc["cbt"]["mode"] == "hash-compare" and "raw disk has no dirty bitmaps" in inc["cbt"]["reason"]


def test_two_repositories_keep_their_own_checkpoints(make_vm, cli, repo, tmp_path):
    vm = make_vm({"vda": (16 * MiB, "qcow2")})
    other = str(tmp_path / "other")
    cli("repo", "init", other, "--chunk-size", str(MiB))
    guest_write(vm, 0, 0x44, 0, MiB)
    a1 = disks(backup(cli, vm, repo))["vda"]["cbt"]["token"]
    b1 = disks(backup(cli, vm, other))["vda"]["cbt"]["token"]
    guest_write(vm, 0, 0x45, 4 * MiB, MiB)
    a2 = disks(backup(cli, vm, repo))["vda"]
    b2 = disks(backup(cli, vm, other))["vda"]
    assert a2["cbt"]["mode"] == b2["cbt"]["mode"] == "cbt"
    assert a2["stats"]["bytes_scanned"] == b2["stats"]["bytes_scanned"] == MiB
    names = {c.getName() for c in vm.dom.listAllCheckpoints()}
    assert names == {a2["cbt"]["token"], b2["cbt"]["token"]} and not names & {a1, b1}


def test_internal_snapshot_fallback(make_vm, cli, repo, tmp_path):
    vm = make_vm({"vda": (16 * MiB, "qcow2")})
    guest_write(vm, 0, 0x55, MiB, MiB)
    expected = raw_copy(vm.disks["vda"], tmp_path / "vda.raw")
    manifest = backup(cli, vm, repo, "-o", "mode=internal-snapshot")
    assert manifest["stats"]["bytes_read"] == MiB
    assert vm.dom.listAllSnapshots() == [] and vm.dom.listAllCheckpoints() == []
    restore_as(cli, vm.uuid, repo, tmp_path / "r", f"{vm.name}-r")
    assert same_content(tmp_path / "r" / f"{vm.name}-r-vda.qcow2", expected)
    remove_vm(vm.dom.connect().lookupByName(f"{vm.name}-r"))


def test_network_disk_of_a_running_vm(make_vm, cli, repo, tmp_path, libvirt_conn):
    """A disk served over NBD by nbdkit: the backup API reads it; a restore makes it a local file."""
    socket = tmp_path / "nbdkit.sock"
    server = subprocess.Popen(["nbdkit", "--foreground", "--unix", str(socket), "memory", "16M"])
    try:
        while not socket.exists():
            assert server.poll() is None
        xml = scratch_domain_xml(f"genievm-test-net-{tmp_path.name[-6:]}", {}).replace(
            "<devices>",
            "<devices><disk type='network' device='disk'><driver name='qemu' type='raw'/>"
            f"<source protocol='nbd'><host transport='unix' socket='{socket}'/></source>"
            "<target dev='vda' bus='virtio'/></disk>",
        )
        dom = libvirt_conn.defineXML(xml)
        try:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            guest_write(TestVM(dom, dom.name(), {}), 0, 0x99, 3 * MiB, MiB)
            manifest = cli("backup", "--vm", dom.name(), "--repo", repo, *OPT, "--json").json()
            vda = disks(manifest)["vda"]
            assert manifest["vm"]["summary"]["cbt_source.vda"] == "hash-compare" and vda["stats"]["bytes_read"] > 0
            source = tmp_path / "source.raw"
            subprocess.run(
                ["qemu-img", "convert", "-O", "raw", f"nbd+unix:///?socket={socket}", str(source)], check=True
            )
            restore_as(cli, dom.name(), repo, tmp_path / "r", f"{dom.name()}-r")
            restored = libvirt_conn.lookupByName(f"{dom.name()}-r")
            assert same_content(tmp_path / "r" / f"{dom.name()}-r-vda.raw", source)
            assert ET.fromstring(restored.XMLDesc()).find("devices/disk").get("type") == "file"
            remove_vm(restored)
        finally:
            remove_vm(dom)
    finally:
        server.terminate()
        server.wait()


def test_lost_bitmap_falls_back_to_hash_compare(make_vm, cli, repo):
    """The checkpoint is in libvirt's metadata but its bitmap is gone from the image (as after a crash)."""
    vm = make_vm({"vda": (16 * MiB, "qcow2")})
    guest_write(vm, 0, 0x23, 0, MiB)
    token = disks(backup(cli, vm, repo))["vda"]["cbt"]["token"]
    vm.dom.destroy()
    subprocess.run(["qemu-img", "bitmap", "--remove", str(vm.disks["vda"]), token], check=True)
    vm.dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    guest_write(vm, 0, 0x24, 5 * MiB, 4096)
    vda = disks(backup(cli, vm, repo))["vda"]
    assert vda["cbt"]["mode"] == "hash-compare" and "checkpoint broken" in vda["cbt"]["reason"], vda["cbt"]
    assert vda["stats"]["chunks_new"] == 1
    assert [c.getName() for c in vm.dom.listAllCheckpoints()] == [vda["cbt"]["token"]]


def test_a_kvm_backup_restores_to_qcow2_files_without_a_provider(make_vm, cli, repo, tmp_path):
    """Issue 15, defect 6: `restore --target DIR --disk-format vda=qcow2` of a KVM backup, no --provider: the
    image provider writes the files, in either format, whichever provider made the backup."""
    vm = make_vm(running=False)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 2M 1M", str(vm.disks["vda"])], check=True)
    backup(cli, vm, repo)
    target = tmp_path / "files"
    restored = cli("restore", "--vm", vm.uuid, "--repo", repo, "--target", str(target),
                   "--disk-format", "vda=qcow2", "--json").json()  # fmt: skip
    assert restored["disks"] == ["vda", "vdb"] and restored["verified"]
    assert sorted(p.name for p in target.iterdir()) == ["vda.qcow2", "vdb.img"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(target / "vda.qcow2")],
                                     capture_output=True, check=True).stdout)  # fmt: skip
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 * MiB
    assert same_content(target / "vda.qcow2", raw_copy(vm.disks["vda"], tmp_path / "vda.raw"))
    assert same_content(target / "vdb.img", raw_copy(vm.disks["vdb"], tmp_path / "vdb.raw"))
