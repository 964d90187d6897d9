"""Helpers of the instant-boot tests: a KVM VM backed up and then deleted, guest writes, disk comparison.

The VM is ``genievm_kvm.testing``'s scratch VM (no OS); its disks hold known data written with
``qemu-io`` before the backup. ``expected`` keeps each disk's content as a raw file, and every guest
write in the test is applied to it too, so the final disks can be compared with it bit for bit.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import libvirt
from genievm_kvm.testing import qemu_io, remove_vm, scratch_domain_xml
from serve_support import PASSPHRASE, genievm

MiB = 1 << 20
DISKS = {"vda": 64 * MiB, "vdb": 32 * MiB}
URI = "qemu:///system"


@dataclass
class BackedUp:
    name: str  # the backed-up VM, deleted since
    folder: Path  # holds repo/
    expected: dict[str, Path]  # disk -> its content now, raw

    def write(self, dom: libvirt.virDomain, disk: str, pattern: int, offset: int, length: int) -> None:
        """A write as the guest makes it (qemu-io on the running VM), and the same into ``expected``."""
        index = list(DISKS).index(disk)
        out = qemu_io(dom, index, f"write -P {pattern:#x} {offset} {length}") + qemu_io(dom, index, "flush")
        assert not out.strip(), out
        with open(self.expected[disk], "r+b") as f:
            f.seek(offset)
            f.write(bytes([pattern]) * length)


def back_up_and_delete(conn: libvirt.virConnect, folder: Path, name: str) -> BackedUp:
    """A stopped VM ``name`` with data on its disks, backed up into folder/repo (encrypted), then deleted."""
    images = {}
    for index, (disk, size) in enumerate(DISKS.items()):
        raw = folder / f"{disk}.source"
        with open(raw, "wb") as f:  # 4 MiB of random data, 1 MiB of a pattern at 8 MiB, holes elsewhere
            f.truncate(size)
            f.write(os.urandom(4 * MiB))
            f.seek(8 * MiB)
            f.write(bytes([0x11 + index]) * MiB)
        path = folder / f"{name}-{disk}.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
        raw.unlink()
        images[disk] = (path, "qcow2")
    dom = conn.defineXML(scratch_domain_xml(name, images))
    expected = {}
    for disk, (path, _fmt) in images.items():
        expected[disk] = folder / f"expected-{disk}.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(expected[disk])], check=True)
    assert genievm("repo", "init", "repo", "--chunk-size", str(MiB), cwd=folder, passphrase=PASSPHRASE).returncode == 0
    done = genievm("backup", "--vm", name, "--repo", "repo", "--provider", "kvm", cwd=folder, passphrase=PASSPHRASE)
    assert done.returncode == 0, done.stderr
    remove_vm(dom)
    for path, _fmt in images.values():
        path.unlink()
    return BackedUp(name, folder, expected)


def same_content(expected: Path, image: Path) -> bool:
    compared = subprocess.run(["qemu-img", "compare", "-U", "-f", "raw", str(expected), str(image)],
                              capture_output=True, text=True)  # fmt: skip
    return compared.returncode == 0


def disk_source(dom: libvirt.virDomain, disk: str) -> str:
    import xml.etree.ElementTree as ET

    for element in ET.fromstring(dom.XMLDesc(0)).iterfind("devices/disk"):
        target = element.find("target")
        source = element.find("source")
        if target is not None and target.get("dev") == disk and source is not None:
            return source.get("file", "")
    return ""


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        return None


def remove_named(conn: libvirt.virConnect, *names: str) -> None:
    for name in names:
        dom = lookup(conn, name)
        if dom is not None:
            remove_vm(dom) if dom.isPersistent() else dom.destroy()
