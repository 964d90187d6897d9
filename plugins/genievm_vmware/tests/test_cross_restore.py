"""Cross-hypervisor restores (issue 17): a vcsim VM's backup defined as a VM on the real libvirtd, and a
real libvirt VM's backup created on vcsim; disks compared bit for bit, configurations checked. And one
repository holding a vcsim VM's and a libvirt VM's backups, deduplicated across them (issue 19).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from genievm_vmware.describe import vm_disks
from genievm_vmware.inventory import lookup_vm
from genievm_vmware.nvram import nvram_location
from genievm_vmware.testing import get_file, put_file, remove_vm
from pyVim.task import WaitForTask
from pyVmomi import vim

libvirt = pytest.importorskip("libvirt")

from genievm_kvm.testing import remove_vm as remove_domain  # noqa: E402
from genievm_kvm.testing import scratch_domain_xml  # noqa: E402

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    if os.geteuid() != 0:
        pytest.skip("the cross-hypervisor tests define VMs through qemu:///system, which needs root here")
    subprocess.run(["bash", str(ROOT / "scripts/services/libvirtd.sh")], check=True)
    c = libvirt.open("qemu:///system")
    yield c
    c.close()


@pytest.fixture
def network(conn: libvirt.virConnect) -> Iterator[str]:
    """An isolated libvirt network (defined, not started: defining a VM on it is enough)."""
    name = f"genievm-{secrets.token_hex(3)}"
    net = conn.networkDefineXML(f"<network><name>{name}</name></network>")
    yield name
    net.undefine()


@pytest.fixture
def domains(conn: libvirt.virConnect) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            continue
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def flat(path: str) -> str:
    return path.removesuffix(".vmdk") + "-flat.vmdk"


def raw_of(image: Path, fmt: str, dest: Path) -> bytes:
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(dest)], check=True)
    return dest.read_bytes()


def filled(size: int, mib: int) -> bytes:
    buf = bytearray(size)
    buf[MiB : (1 + mib) * MiB] = os.urandom(mib * MiB)
    buf[-4096:] = os.urandom(4096)
    return bytes(buf)


@pytest.mark.parametrize("firmware", ["bios", "efi"])
def test_a_vmware_backup_restored_as_a_kvm_vm(cli, opt, vcsim, make_vm, repo, tmp_path, conn, network, domains,
                                              firmware):  # fmt: skip
    vm = make_vm([8 * MiB, 4 * MiB])
    WaitForTask(vm.vm.ReconfigVM_Task(vim.vm.ConfigSpec(numCPUs=4, numCoresPerSocket=2, memoryMB=256,
                                                        firmware=firmware)))  # fmt: skip
    (first, (path1, size1)), (second, (path2, size2)) = sorted(vm.disks.items())
    data = {first: filled(size1, 3), second: filled(size2, 1)}
    put_file(vcsim, flat(path1), data[first])
    put_file(vcsim, flat(path2), data[second])
    put_file(vcsim, nvram_location(vm.vm)[1], b"vSphere's NVRAM")  # kept in the backup, but no OVMF variables
    source_mac = next(d.macAddress for d in vm.vm.config.hardware.device if hasattr(d, "macAddress"))
    cli("backup", "--vm", vm.name, "--repo", repo, *opt)

    name = f"{vm.name}-kvm"
    domains.append(name)
    target = tmp_path / "restored"
    result = cli("restore", "--vm", vm.uuid, "--repo", repo, "--provider", "kvm", "--new-name", name,
                 "--target", str(target), "--disk-format", f"{first}=qcow2", "--network-map", f"VM Network={network}",
                 "--json")  # fmt: skip
    dom = conn.lookupByName(name)
    assert result.json()["vm_id"] == dom.UUIDString()
    assert result.json()["verified"] is True
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert root.findtext("vcpu") == "4"
    topology = root.find("cpu/topology")
    assert topology is not None and (topology.get("sockets"), topology.get("cores")) == ("2", "2")
    assert int(root.findtext("memory") or 0) == 256 * 1024  # KiB
    loader = root.findtext("os/loader")
    assert loader == ("/usr/share/OVMF/OVMF_CODE_4M.fd" if firmware == "efi" else None)
    disks = {d.find("target").get("dev"): d for d in root.findall("devices/disk")}  # type: ignore[union-attr]
    assert sorted(disks) == ["sda", "sdb"]
    assert {d.find("target").get("bus") for d in disks.values()} == {"sata"}  # type: ignore[union-attr]
    images = {dev: (Path(d.find("source").get("file")), d.find("driver").get("type"))  # type: ignore[union-attr]
              for dev, d in disks.items()}  # fmt: skip
    assert images == {
        "sda": (target / f"{name}-{first}.qcow2", "qcow2"),
        "sdb": (target / f"{name}-{second}.raw", "raw"),
    }
    assert raw_of(*images["sda"], tmp_path / "a.raw") == data[first]  # converted to qcow2 while restored
    assert images["sdb"][0].read_bytes() == data[second]
    # no second copy, nor vSphere's NVRAM as OVMF's variables
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p, _ in images.values())
    (nic,) = root.findall("devices/interface")
    assert nic.get("type") == "network" and nic.find("source").get("network") == network  # type: ignore[union-attr]
    assert nic.find("model").get("type") == "e1000"  # type: ignore[union-attr]
    mac = nic.find("mac").get("address")  # type: ignore[union-attr]
    assert mac and mac != source_mac  # a new one, made by libvirt

    kept = f"{vm.name}-kvm-macs"
    domains.append(kept)
    cli("restore", "--vm", vm.uuid, "--repo", repo, "--provider", "kvm", "--new-name", kept, "--target",
        str(tmp_path / "kept"), "--network-map", f"VM Network={network}", "--keep-macs",
        "--disk-bus", "virtio")  # fmt: skip
    root = ET.fromstring(conn.lookupByName(kept).XMLDesc(0))
    assert root.find("devices/interface/mac").get("address") == source_mac  # type: ignore[union-attr]
    assert [d.find("target").get("dev") for d in root.findall("devices/disk")] == ["vda", "vdb"]  # type: ignore[union-attr]


def test_a_cross_restore_to_a_missing_network_is_refused_before_anything_is_written(cli, opt, vcsim, make_vm, repo,
                                                                                   tmp_path, conn):  # fmt: skip
    vm = make_vm([2 * MiB])
    cli("backup", "--vm", vm.name, "--repo", repo, *opt)
    name = f"{vm.name}-nowhere"
    target = tmp_path / "restored"
    result = cli("restore", "--vm", vm.uuid, "--repo", repo, "--provider", "kvm", "--new-name", name,
                 "--target", str(target), check=False)  # fmt: skip
    assert result.code == 3, result.err
    assert result.err.strip().startswith(
        "genievm: error: invalid providerOptions: networkMap: libvirt has no network 'VM Network'"
    ), result.err
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(name)
    assert not target.exists() or list(target.iterdir()) == []


def test_a_kvm_backup_restored_on_vsphere(cli, opt, vcsim, si, repo, tmp_path, conn):
    name = f"genievm-test-{secrets.token_hex(3)}"
    data = {"vda": filled(6 * MiB, 2), "vdb": filled(3 * MiB, 1)}
    images = {}
    for dev, content in data.items():
        raw = tmp_path / f"{dev}.raw"
        raw.write_bytes(content)
        image = tmp_path / f"{name}-{dev}.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)], check=True)
        images[dev] = (image, "qcow2")
    xml = scratch_domain_xml(name, images).replace(
        "<memory unit='MiB'>64</memory>", "<memory unit='MiB'>128</memory><vcpu>2</vcpu>")  # fmt: skip
    dom = conn.defineXML(xml)
    try:
        cli("backup", "--vm", name, "--repo", repo, "--provider", "kvm")
    finally:
        remove_domain(dom)
    new_name = f"{name}-vsphere"
    cli("restore", "--vm", name, "--repo", repo, *opt, "--new-name", new_name, "-o", "datastore=LocalDS_0",
        "-o", "defaultNetwork=VM Network")  # fmt: skip
    restored = lookup_vm(si, new_name)
    assert restored is not None
    try:
        config = restored.config
        assert (config.hardware.numCPU, config.hardware.memoryMB, config.firmware) == (2, 128, "bios")
        assert config.guestId == "otherGuest64"
        controllers = [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualSCSIController)]
        assert [type(c).__name__ for c in controllers] == ["vim.vm.device.VirtualLsiLogicSASController"]
        disks = vm_disks(list(config.hardware.device))
        assert [(d.device.unitNumber, d.capacity) for d in disks] == [(0, 6 * MiB), (1, 3 * MiB)]
        for d, dev in zip(disks, ("vda", "vdb"), strict=True):
            assert get_file(vcsim, flat(d.path)) == data[dev]  # read back from the simulator's datastore
        nics = [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
        assert [(type(n).__name__, n.backing.deviceName) for n in nics] == [
            ("vim.vm.device.VirtualE1000e", "VM Network")
        ]
    finally:
        remove_vm(restored)


def test_one_repository_deduplicates_a_vmware_and_a_kvm_backup(cli, opt, vcsim, make_vm, repo, tmp_path, conn):
    """The same disk content on both hypervisors is stored once: the KVM backup stores no chunk of its own."""
    vm = make_vm([8 * MiB])
    ((_disk, (path, size)),) = vm.disks.items()
    data = filled(size, 4)  # 4 MiB of random data at 1 MiB, 4 KiB at the end: 5 chunks of 1 MiB, the rest zero
    put_file(vcsim, flat(path), data)
    vmware = cli("backup", "--vm", vm.name, "--repo", repo, *opt, "--json").json()
    chunks = sorted(p.name for p in (Path(repo) / "chunks").rglob("*") if p.is_file())
    assert (vmware["stats"]["chunks_new"], len(chunks)) == (5, 5)

    name = f"genievm-test-{secrets.token_hex(3)}"
    raw = tmp_path / "kvm.raw"
    raw.write_bytes(data)
    image = tmp_path / f"{name}-vda.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)], check=True)
    dom = conn.defineXML(scratch_domain_xml(name, {"vda": (image, "qcow2")}))
    try:
        kvm = cli("backup", "--vm", name, "--repo", repo, "--provider", "kvm", "--json").json()
    finally:
        remove_domain(dom)
    assert (kvm["stats"]["chunks_new"], kvm["stats"]["chunks_deduplicated"]) == (0, 5)
    assert kvm["stats"]["bytes_deduplicated"] == 5 * MiB  # every data chunk is the VMware backup's
    assert sorted(p.name for p in (Path(repo) / "chunks").rglob("*") if p.is_file()) == chunks
    stats = cli("repo", "stats", repo, "--json").json()
    assert (stats["backups"], stats["unique_chunks"]) == (2, 5)

    cli("verify", "--repo", repo, "--read-data")
    for backup, vm_id in ((vmware, vm.uuid), (kvm, name)):
        target = tmp_path / f"restored-{backup['backup_id']}"
        cli("restore", "--vm", vm_id, "--backup", backup["backup_id"], "--repo", repo, "--target", str(target))
        (restored,) = target.iterdir()
        assert restored.read_bytes() == data
