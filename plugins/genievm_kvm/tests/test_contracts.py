"""GenieVM's contract suites over the ``kvm`` provider and its CBT sources, on real libvirt VMs.

KVM tests are slow, so the suites share VMs: one running (paused) VM for the
whole provider contract and the ``libvirt-checkpoint`` source, one stopped VM
for the ``qcow2-bitmap`` source; each restore defines one VM, removed after
its test. The ``lvm-thin`` source runs the CBT contract in test_lvm_thin.py, on
real thin metadata. The KVM plugin declares no self-check: these need a hypervisor.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from genievm_kvm.cbt import LibvirtCheckpointCBT, Qcow2BitmapCBT
from genievm_kvm.provider import KVMProvider, run_dir
from genievm_kvm.testing import remove_vm, scratch_domain_xml
from kvm_support import URI, MiB, TestVM, create_images, guest_write, raw_copy

from genievm_core.jobs import RestoreResult, run_backup
from genievm_core.models.config import BackupConfig
from genievm_core.models.extents import Extent
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.testing import CBTCase, CBTSourceContract, MemoryStorage, ProviderContract

DISKS = {"vda": (16 * MiB, "qcow2"), "vdb": (8 * MiB, "raw")}


def define_vm(conn: libvirt.virConnect, folder: Path, running: bool) -> TestVM:
    name = f"genievm-contract-{secrets.token_hex(3)}"
    images = create_images(folder, name, dict(DISKS))
    dom = conn.defineXML(scratch_domain_xml(name, images))
    if running:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    return TestVM(dom, name, {t: p for t, (p, _) in images.items()}, {t: f for t, (_, f) in images.items()})


@pytest.fixture(scope="module")
def running_vm(libvirt_conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestVM]:
    vm = define_vm(libvirt_conn, tmp_path_factory.mktemp("kvm-contract"), running=True)
    try:
        guest_write(vm, 0, 0xA1, 0, 256 * 1024)
        guest_write(vm, 0, 0xA2, 12 * MiB, 64 * 1024)
        guest_write(vm, 1, 0xB1, 1 * MiB, 512 * 1024)
        yield vm
    finally:
        remove_vm(vm.dom)


def backup_token(host: PluginHost, vm: TestVM, disk: str = "vda") -> str:
    repo = Repository.init(MemoryStorage(f"memory://kvm-cbt-{secrets.token_hex(3)}"), passphrase=None)
    config = BackupConfig(vm_id=vm.uuid, backup_path=repo.url, provider="kvm", provider_options={"uri": URI})
    manifest = run_backup(host, config, repo, workers=2)
    token = next(d.cbt.token for d in manifest.disks if d.name == disk)
    assert token
    return token


def describe_disk(vm: TestVM, disk: str = "vda") -> Any:
    provider = KVMProvider({"uri": URI})
    try:
        return next(d for d in provider.describe_vm(vm.uuid).disks if d.name == disk)
    finally:
        provider.close()


@pytest.fixture(scope="module")
def checkpoint_case(genievm_host: PluginHost, running_vm: TestVM) -> CBTCase:
    """A checkpoint of a backup of the running VM, and a guest write since."""
    token = backup_token(genievm_host, running_vm)
    guest_write(running_vm, 0, 0x3C, 5 * MiB, 128 * 1024)
    return CBTCase(describe_disk(running_vm), token, [Extent(5 * MiB, 128 * 1024)])


@pytest.fixture(scope="module")
def bitmap_case(
    genievm_host: PluginHost, libvirt_conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CBTCase]:
    """A stopped VM's qcow2 bitmap from a backup, and two writes to the image since."""
    vm = define_vm(libvirt_conn, tmp_path_factory.mktemp("kvm-bitmap"), running=False)
    try:
        token = backup_token(genievm_host, vm)
        image = str(vm.disks["vda"])
        for command in ("write -P 0x11 2M 64k", "write -P 0x22 15M 4k"):
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, image], check=True, capture_output=True)
        yield CBTCase(describe_disk(vm), token, [Extent(2 * MiB, 64 * 1024), Extent(15 * MiB, 4096)])
    finally:
        remove_vm(vm.dom)


class TestKVMProvider(ProviderContract):
    provider_name = "kvm"
    chunk_size = 1 << 20

    @pytest.fixture
    def provider_options(self) -> dict[str, Any]:
        return {"uri": URI}

    @pytest.fixture
    def vm_id(self, running_vm: TestVM) -> str:
        return running_vm.name

    @pytest.fixture
    def mutate_disk(self, running_vm: TestVM) -> Callable[[str, int, int, int], None]:
        index = {name: i for i, name in enumerate(DISKS)}
        return lambda disk, offset, length, pattern: guest_write(running_vm, index[disk], pattern, offset, length)

    @pytest.fixture
    def restore_config(
        self, running_vm: TestVM, libvirt_conn: libvirt.virConnect, tmp_path: Path
    ) -> Iterator[dict[str, Any]]:
        name = f"{running_vm.name}-r{secrets.token_hex(2)}"
        yield {"restore_path": tmp_path / "restored", "new_vm_name": name}
        try:
            remove_vm(libvirt_conn.lookupByName(name))
        except libvirt.libvirtError:
            pass  # not defined: the test failed before

    @pytest.fixture
    def read_restored(self, restore_config: dict[str, Any], tmp_path: Path) -> Callable[[RestoreResult, str], bytes]:
        def read(result: RestoreResult, disk: str) -> bytes:
            (image,) = restore_config["restore_path"].glob(f"{restore_config['new_vm_name']}-{disk}.*")
            return raw_copy(image, tmp_path / f"restored-{disk}.raw").read_bytes()

        return read

    @pytest.fixture
    def backup_artifacts(self, running_vm: TestVM) -> Callable[[], set[str]]:
        """Backup jobs, snapshots, and NBD sockets and scratch files (checkpoints are kept on purpose)."""
        folder = run_dir(None)

        def artifacts() -> set[str]:
            found = {f"snapshot {n}" for n in running_vm.dom.snapshotListNames()}
            found |= {f"file {p.name}" for p in folder.iterdir() if running_vm.name in p.name or p.suffix == ".sock"}
            if running_vm.dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                found.add("a domain job")
            return found

        return artifacts


class TestLibvirtCheckpointCBT(CBTSourceContract):
    @pytest.fixture
    def cbt_source(self) -> LibvirtCheckpointCBT:
        return LibvirtCheckpointCBT()

    @pytest.fixture
    def cbt_case(self, checkpoint_case: CBTCase) -> CBTCase:
        return checkpoint_case


class TestQcow2BitmapCBT(CBTSourceContract):
    @pytest.fixture
    def cbt_source(self) -> Qcow2BitmapCBT:
        return Qcow2BitmapCBT()

    @pytest.fixture
    def cbt_case(self, bitmap_case: CBTCase) -> CBTCase:
        return bitmap_case
