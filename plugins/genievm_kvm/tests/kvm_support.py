"""Helpers of the KVM plugin's tests (conftest.py puts this folder on sys.path).

- the VM itself (XML, removal) comes from ``genievm_kvm.testing``.
- ``guest_write(vm, disk_index, pattern, offset, length)``: a write as the guest makes it,
  through QEMU's ``qemu-io`` monitor command on the running VM.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
from genievm_kvm.testing import qemu_io

URI = "qemu:///system"
PASSPHRASE = "kvm test passphrase"
MiB = 1 << 20


@dataclass
class TestVM:
    __test__ = False  # not a pytest test class

    dom: libvirt.virDomain
    name: str
    disks: dict[str, Path]  # target -> image
    formats: dict[str, str] = field(default_factory=dict)

    @property
    def uuid(self) -> str:
        return str(self.dom.UUIDString())


def create_images(
    folder: Path, name: str, disks: dict[str, tuple[int, str]], random_mib: int = 0
) -> dict[str, tuple[Path, str]]:
    """New images; the first begins with ``random_mib`` MiB of random data (slow to compress)."""
    images = {}
    for target, (size, fmt) in disks.items():
        path = folder / f"{name}-{target}.{fmt}"
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)], check=True)
        if random_mib and not images:
            raw = folder / f"{name}-{target}.random"
            raw.write_bytes(os.urandom(random_mib * MiB))
            subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", fmt, str(raw), str(path)], check=True)
            raw.unlink()
        images[target] = (path, fmt)
    return images


def guest_write(vm: TestVM, disk_index: int, pattern: int, offset: int, length: int) -> None:
    """Write ``length`` bytes of ``pattern`` at ``offset`` of the VM's disk number ``disk_index``, as the guest."""
    out = qemu_io(vm.dom, disk_index, f"write -P {pattern:#x} {offset} {length}")
    out += qemu_io(vm.dom, disk_index, "flush")
    assert not out.strip(), out  # qemu-io answers only when something failed


def raw_copy(image: Path, dest: Path) -> Path:
    """The image's content now, as a raw file (a paused test VM does not change it meanwhile)."""
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(image), str(dest)], check=True)
    return dest


def same_content(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-U", str(a), str(b)], capture_output=True).returncode == 0


@dataclass
class CLIResult:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)
