"""Listing and describing VMs, the core's choice of CBT source, and the KVM CBT sources on their own."""

from __future__ import annotations

import base64
import subprocess
import xml.etree.ElementTree as ET

from genievm_kvm.provider import CBT_SOURCES, KVMProvider
from kvm_support import PASSPHRASE, URI, MiB, guest_write

from genievm_core.jobs import run_backup
from genievm_core.models.config import BackupConfig
from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin import CBTSourceRegistry, PluginHost, hookimpl
from genievm_core.plugin.protocols import ChangedExtents
from genievm_core.repository import Repository
from genievm_core.repository.storage import open_storage

OPT = ["--provider", "kvm", "-o", f"uri={URI}"]


def test_vms_lists_and_describe_reads_disks(make_vm, cli):
    vm = make_vm({"vda": (64 * MiB, "qcow2"), "vdb": (16 * MiB, "raw")})
    listed = {v["name"]: v for v in cli("vms", "--provider", "kvm", "-o", f"uri={URI}", "--json").json()}
    assert listed[vm.name] == {"id": vm.uuid, "name": vm.name, "state": "paused"}

    provider = KVMProvider({"uri": URI})
    try:
        described = provider.describe_vm(vm.name)
        assert provider.describe_vm(vm.uuid).id == described.id == vm.uuid
    finally:
        provider.close()
    disks = {d.name: d for d in described.disks}
    assert (disks["vda"].size, disks["vda"].storage_kind, disks["vda"].format) == (64 * MiB, "qcow2-file", "qcow2")
    assert (disks["vdb"].size, disks["vdb"].storage_kind, disks["vdb"].format) == (16 * MiB, "raw-file", "raw")
    assert disks["vda"].location == str(vm.disks["vda"])
    assert described.summary["cbt_source.vda"] == "libvirt-checkpoint"
    assert described.summary["cbt_source.vdb"] == "hash-compare"
    assert ET.fromstring(described.config).findtext("name") == vm.name


def test_excluded_disk_and_stored_xml(make_vm, cli, repo):
    vm = make_vm()
    guest_write(vm, 1, 0x7A, 0, MiB)
    manifest = cli("backup", "--vm", vm.name, "--repo", repo, *OPT, "--exclude-disk", "vdb", "--json").json()
    assert [d["name"] for d in manifest["disks"]] == ["vda"]
    listed = cli("backups", "list", "--repo", repo, "--vm", vm.name, "--json").json()  # by name: kept under the UUID
    assert [(b["backup_id"], b["vm"], b["vm_name"]) for b in listed] == [(manifest["backup_id"], vm.uuid, vm.name)]
    host = PluginHost()
    stored = Repository.open(open_storage(host, repo), passphrase=lambda: PASSPHRASE).get_manifest(
        manifest["backup_id"]
    )
    xml = ET.fromstring(base64.b64decode(stored.vm.config or ""))
    assert xml.findtext("uuid") == vm.uuid and stored.vm.config_format == "libvirt-domain-xml"
    checkpoint = ET.fromstring(vm.dom.listAllCheckpoints()[0].getXMLDesc())
    assert {d.get("name"): d.get("checkpoint") for d in checkpoint.iterfind("disks/disk")} == {
        "vda": "bitmap",
        "vdb": "no",
    }


def test_cbt_sources_are_registered_and_work_on_their_own(make_vm, cli, repo, libvirt_conn):
    registered = PluginHost().cbt_sources
    assert {s.name for s in CBT_SOURCES} <= set(registered.names())
    vm = make_vm({"vda": (32 * MiB, "qcow2")})
    token = cli("backup", "--vm", vm.name, "--repo", repo, *OPT, "--json").json()["disks"][0]["cbt"]["token"]
    guest_write(vm, 0, 0x01, 3 * MiB, 64 * 1024)
    provider = KVMProvider({"uri": URI})
    try:
        running = provider.describe_vm(vm.uuid).disks[0]
        live = registered.get("libvirt-checkpoint")
        assert live.supports(running)
        assert live.changed_extents(running, token).extents == [Extent(3 * MiB, 64 * 1024)]
        assert live.changed_extents(running, "genievm-nope").extents is None
        vm.dom.destroy()
        stopped = provider.describe_vm(vm.uuid).disks[0]
    finally:
        provider.close()
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 9M 4k", str(vm.disks["vda"])], check=True)
    offline = registered.get("qcow2-bitmap")
    assert offline.supports(stopped) and not live.supports(stopped)
    assert offline.changed_extents(stopped, token).extents == [Extent(3 * MiB, 64 * 1024), Extent(9 * MiB, 64 * 1024)]


class _SiteArrayCBT:
    """Another plugin's source for one disk, above KVM's priorities."""

    name = "site-array"
    priority = 99

    def supports(self, disk: DiskInfo) -> bool:
        return disk.name == "vda"

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        return ChangedExtents.unavailable(f"site-array has no snapshot {token}")


class _SitePlugin:
    @hookimpl
    def genievm_register_cbt_sources(self, registry: CBTSourceRegistry) -> None:
        registry.add(_SiteArrayCBT())


def test_the_core_chooses_between_kvm_sources_and_other_plugins(make_vm, cli, repo):
    vm = make_vm()
    full = cli("backup", "--vm", vm.name, "--repo", repo, *OPT, "--json").json()
    token = full["disks"][0]["cbt"]["token"]
    guest_write(vm, 1, 0x22, 2 * MiB, 64 * 1024)
    host = PluginHost(extra_plugins=[("site", _SitePlugin())])
    repository = Repository.open(open_storage(host, repo), passphrase=lambda: PASSPHRASE)
    config = BackupConfig(vm_id=vm.uuid, backup_path=repo, provider="kvm", provider_options={"uri": URI})
    cbt = {d.name: d for d in run_backup(host, config, repository, workers=2).disks}
    assert (cbt["vda"].cbt.mode, cbt["vda"].cbt.reason) == ("hash-compare", f"site-array has no snapshot {token}")
    # vdb: libvirt-checkpoint, answered from this backup's own export
    assert (cbt["vdb"].cbt.mode, cbt["vdb"].cbt.source) == ("cbt", "libvirt-checkpoint")
    assert cbt["vdb"].stats.bytes_scanned == MiB and cbt["vdb"].cbt.token != token
