"""``genievm kvm enable-cbt``: a raw disk behind a qcow2 overlay whose data file it is, so that an
incremental backup reads only what changed; ``disable-cbt`` puts the domain back as it was."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import libvirt
from genievm_kvm.testing import remove_vm
from kvm_support import URI, MiB, guest_write, raw_copy, same_content

OPT = ["--provider", "kvm", "-o", f"uri={URI}"]


def test_enable_cbt_makes_a_raw_disks_incremental_read_only_what_changed(make_vm, cli, repo, tmp_path, libvirt_conn):
    vm = make_vm(disks={"vda": (32 * MiB, "raw")}, running=False)
    raw = vm.disks["vda"]
    before = vm.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    enabled = cli("kvm", "enable-cbt", vm.name, "--uri", URI, "--json").json()
    overlay = tmp_path / f"{vm.name}-vda.cbt.qcow2"
    assert enabled["disks"] == [{"disk": "vda", "raw": str(raw), "overlay": str(overlay)}]
    disk = ET.fromstring(vm.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).find("devices/disk")
    assert disk is not None and disk.find("driver").get("type") == "qcow2"
    assert disk.find("source").get("file") == str(overlay)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)], capture_output=True,
                                     check=True, text=True).stdout)  # fmt: skip
    assert info["format-specific"]["data"]["data-file"] == str(raw)
    assert info["format-specific"]["data"]["data-file-raw"] is True

    vm.dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    guest_write(vm, 0, 0x5A, 2 * MiB, 64 * 1024)
    full = cli("backup", "--vm", vm.name, "--repo", repo, *OPT, "--json").json()
    assert full["disks"][0]["cbt"]["token"]  # a checkpoint: its bitmap is in the overlay
    guest_write(vm, 0, 0xA5, 20 * MiB + 4096, 8192)
    inc = cli("backup", "--vm", vm.name, "--repo", repo, *OPT, "--json").json()
    cbt = inc["disks"][0]["cbt"]
    assert (cbt["mode"], cbt["source"]) == ("cbt", "libvirt-checkpoint")
    assert inc["disks"][0]["stats"]["bytes_scanned"] == 1 * MiB  # one changed chunk, not the 32 MiB disk

    enabled_xml = vm.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    for command in ("enable-cbt", "disable-cbt"):  # not while it runs (paused is running to libvirt)
        out = cli("kvm", command, vm.name, "--uri", URI, check=False)
        assert out.code == 5
        assert out.err.strip().splitlines() == [
            f"genievm: error: provider kvm: VM {vm.name} is paused; {command} changes the format of its disks, "
            "which libvirt cannot do while it runs: shut it down first"
        ]
    assert vm.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == enabled_xml
    vm.dom.destroy()
    at_inc = raw_copy(raw, tmp_path / "at-inc.raw")  # the raw disk holds every write: the data file is raw

    refused = cli("kvm", "enable-cbt", vm.name, "--uri", URI, check=False)
    assert refused.code == 3 and "has CBT enabled already" in refused.err

    disabled = cli("kvm", "disable-cbt", vm.name, "--uri", URI, "--json").json()
    assert disabled["checkpoints_removed"] == [cbt["token"]]
    assert vm.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before
    assert not overlay.exists() and vm.dom.listAllCheckpoints() == []
    assert same_content(raw, at_inc)

    new_name = f"{vm.name}-r"
    cli("restore", "--vm", vm.uuid, "--backup", inc["backup_id"], "--repo", repo, *OPT, "--target",
        str(tmp_path / "r"), "--new-name", new_name)  # fmt: skip
    try:
        assert same_content(tmp_path / "r" / f"{new_name}-vda.qcow2", at_inc)
    finally:
        remove_vm(libvirt_conn.lookupByName(new_name))
