"""File restore from a backup made by the KVM provider: a real libvirt VM whose qcow2 disk holds an MBR table and
an ext4 partition, backed up while it runs (libvirt's backup API), then its files taken out with ``genievm files``."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")
sys.path.insert(0, str(Path(__file__).parent))

from genievm_kvm.testing import remove_vm, scratch_domain_xml  # noqa: E402
from guest_disks import MiB, compare_trees, ext4, mbr_disk, source_tree  # noqa: E402
from serve_support import PASSPHRASE, genievm  # noqa: E402

URI = "qemu:///system"
ROOT = Path(__file__).resolve().parents[3]
KVM = ["--provider", "kvm", "--provider-option", f"uri={URI}"]


@pytest.fixture
def running_vm(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A VM, started paused, whose disk vda (qcow2) holds ``source`` in an ext4 partition; (name, source)."""
    if shutil.which("libvirtd") is None:
        pytest.skip("libvirtd is not installed (scripts/setup.sh installs it)")
    if os.geteuid() != 0:
        pytest.skip("the KVM tests start VMs through qemu:///system, which needs root here")
    subprocess.run(["bash", str(ROOT / "scripts/services/libvirtd.sh")], check=True)
    source = source_tree(tmp_path / "source")
    raw = mbr_disk(tmp_path / "vda.raw", 64 * MiB, [(ext4(tmp_path / "p1.img", 48 * MiB, source), "83")])
    image = tmp_path / "vda.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(image)], check=True)
    conn = libvirt.open(URI)
    name = f"genievm-files-{secrets.token_hex(3)}"
    dom = conn.defineXML(scratch_domain_xml(name, {"vda": (image, "qcow2")}))
    try:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        yield name, source
    finally:
        remove_vm(dom)
        conn.close()


@pytest.mark.slow
def test_files_come_back_from_a_kvm_backup_byte_for_byte(tmp_path: Path, running_vm: tuple[str, Path]) -> None:
    name, source = running_vm
    assert genievm("repo", "init", "repo", cwd=tmp_path, passphrase=PASSPHRASE).returncode == 0
    done = genievm("backup", "--vm", name, "--repo", "repo", *KVM, cwd=tmp_path, passphrase=PASSPHRASE)
    assert done.returncode == 0, done.stderr
    got = genievm("files", "get", "--repo", "repo", "--vm", name, "/", "--to", "restored", "--json", cwd=tmp_path,
                  passphrase=PASSPHRASE)  # fmt: skip
    assert got.returncode == 0, got.stderr
    shutil.rmtree(tmp_path / "restored" / "lost+found")
    assert compare_trees(source, tmp_path / "restored") == []
