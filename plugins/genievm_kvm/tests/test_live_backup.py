"""Backups of a running VM through libvirt's backup API, restore to a new VM, compared byte for byte."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from genievm_kvm.testing import remove_vm
from kvm_support import URI, MiB, guest_write, raw_copy, same_content

OPT = ["--provider", "kvm", "-o", f"uri={URI}"]


def test_full_incremental_restore(make_vm, cli, repo, tmp_path, libvirt_conn):
    vm = make_vm()
    guest_write(vm, 0, 0xAB, 1 * MiB, 64 * 1024)
    guest_write(vm, 1, 0x11, 5 * MiB, 3 * MiB)
    full = cli("backup", "--vm", vm.name, "--repo", repo, *OPT, "--json").json()
    at_full = {t: raw_copy(p, tmp_path / f"full-{t}.raw") for t, p in vm.disks.items()}
    assert full["kind"] == "full"
    tokens = {d["name"]: d["cbt"]["token"] for d in full["disks"]}
    assert tokens["vda"] and tokens["vda"] == tokens["vdb"]
    assert [c.getName() for c in vm.dom.listAllCheckpoints()] == [tokens["vda"]]
    # a full backup reads only allocated extents
    assert full["stats"]["bytes_read"] == 64 * 1024 + 3 * MiB

    guest_write(vm, 0, 0xCD, 8 * MiB, 64 * 1024)
    guest_write(vm, 0, 0xEF, 40 * MiB + 4096, 8192)
    inc = cli("backup", "--vm", vm.name, "--repo", repo, *OPT, "--json").json()
    at_inc = {t: raw_copy(p, tmp_path / f"inc-{t}.raw") for t, p in vm.disks.items()}
    disks = {d["name"]: d for d in inc["disks"]}
    assert disks["vda"]["cbt"]["mode"] == "cbt" and disks["vda"]["cbt"]["source"] == "libvirt-checkpoint"
    # only the two dirty chunks of vda are read; nothing of vdb
    assert disks["vda"]["stats"]["bytes_scanned"] == 2 * MiB
    assert disks["vdb"]["stats"]["bytes_scanned"] == 0 and disks["vdb"]["stats"]["bytes_read"] == 0
    # the older checkpoint is gone: only the one the repository needs is kept
    assert [c.getName() for c in vm.dom.listAllCheckpoints()] == [disks["vda"]["cbt"]["token"]]

    for backup, expected, name in ((full, at_full, "r-full"), (inc, at_inc, "r-inc")):
        new_name = f"{vm.name}-{name}"
        out = cli(
            "restore",
            "--vm",
            vm.uuid,
            "--backup",
            backup["backup_id"],
            "--repo",
            repo,
            *OPT,
            "--target",
            str(tmp_path / name),
            "--new-name",
            new_name,
            *(["--power-on"] if name == "r-inc" else []),
            "--json",
        ).json()
        dom = libvirt_conn.lookupByName(new_name)
        try:
            assert out["vm_id"] == dom.UUIDString() != vm.uuid
            assert dom.isActive() == (name == "r-inc")  # --power-on started it
            macs = {m.get("address") for m in ET.fromstring(dom.XMLDesc()).iterfind("devices/interface/mac")}
            assert macs and not macs & {
                m.get("address") for m in ET.fromstring(vm.dom.XMLDesc()).iterfind("devices/interface/mac")
            }
            for target in vm.disks:
                restored = tmp_path / name / f"{new_name}-{target}.qcow2"
                assert same_content(restored, expected[target]), f"{name} {target} differs"
        finally:
            remove_vm(dom)
