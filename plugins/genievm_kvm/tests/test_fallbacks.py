"""Stopped VMs, broken or missing checkpoints, raw disks, two repositories, the internal-snapshot path."""

from __future__ import annotations

import json
import subprocess

from kvm_support import URI, MiB, guest_write, raw_copy, same_content

OPT = ["--provider", "kvm", "-o", f"uri={URI}"]


def backup(cli, vm, repo, *extra):
    return cli("backup", "--vm", vm.name, "--repo", repo, *OPT, *extra, "--json").json()


def disks(manifest):
    return {d["name"]: d for d in manifest["disks"]}


def bitmaps(image):
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(image)], capture_output=True, check=True)
    return [b["name"] for b in json.loads(out.stdout)["format-specific"]["data"].get("bitmaps", [])]


def test_stopped_vm_incremental_from_bitmap(make_vm, cli, repo, tmp_path):
    vm = make_vm(running=False)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 2M 1M", str(vm.disks["vda"])], check=True)
    full = backup(cli, vm, repo)
    token = disks(full)["vda"]["cbt"]["token"]
    assert full["kind"] == "full" and bitmaps(vm.disks["vda"]) == [token]
    assert full["vm"]["summary"]["cbt_source.vda"] == "qcow2-bitmap"

    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x6b 20M 4k", str(vm.disks["vda"])], check=True)
    inc = backup(cli, vm, repo)
    vda = disks(inc)["vda"]
    assert vda["cbt"]["mode"] == "cbt" and vda["cbt"]["source"] == "qcow2-bitmap"
    assert vda["stats"]["bytes_scanned"] == 1 * MiB  # the one chunk the write touched
    assert bitmaps(vm.disks["vda"]) == [vda["cbt"]["token"]]  # the parent's bitmap is removed
    assert not list((tmp_path.parent).glob("*.sock"))

    expected = raw_copy(vm.disks["vda"], tmp_path / "vda.raw")
    cli(
        "restore",
        "--vm",
        vm.uuid,
        "--repo",
        repo,
        *OPT,
        "--target",
        str(tmp_path / "r"),
        "--new-name",
        f"{vm.name}-r",
        "--disk-format",
        "vda=raw",
        "--json",
    )
    assert same_content(tmp_path / "r" / f"{vm.name}-r-vda.raw", expected)
    vm.dom.connect().lookupByName(f"{vm.name}-r").undefine()


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
    cli(
        "restore",
        "--vm",
        vm.uuid,
        "--repo",
        repo,
        *OPT,
        "--target",
        str(tmp_path / "r"),
        "--new-name",
        f"{vm.name}-r",
        "--json",
    )
    assert same_content(tmp_path / "r" / f"{vm.name}-r-vda.qcow2", expected)
    vm.dom.connect().lookupByName(f"{vm.name}-r").undefine()
