"""Helpers of the KVM plugin's tests (conftest.py puts this folder on sys.path).

- ``domain_xml``: a q35 VM with no OS and qcow2/raw disks on virtio.
- ``guest_write(vm, disk_index, pattern, offset, length)``: a write as the guest makes it,
  through QEMU's ``qemu-io`` monitor command on the running VM.
- ``undefine``: destroy and undefine a VM with its checkpoint and snapshot metadata.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import libvirt_qemu

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


def domain_xml(name: str, disks: dict[str, tuple[Path, str]]) -> str:
    kind = "kvm" if os.access("/dev/kvm", os.W_OK) else "qemu"
    disk_xml = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/><source file='{path}'/>"
        f"<target dev='{target}' bus='virtio'/></disk>"
        for target, (path, fmt) in disks.items()
    )
    mac = ":".join(secrets.token_hex(1) for _ in range(3))
    return (
        f"<domain type='{kind}'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>"
        f"<devices>{disk_xml}<interface type='user'><mac address='52:54:00:{mac}'/><model type='virtio'/>"
        "</interface></devices></domain>"
    )


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


def undefine(dom: libvirt.virDomain) -> None:
    try:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise


def hmp(dom: libvirt.virDomain, command: str) -> str:
    return str(libvirt_qemu.qemuMonitorCommand(dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP))


def guest_write(vm: TestVM, disk_index: int, pattern: int, offset: int, length: int) -> None:
    """Write ``length`` bytes of ``pattern`` at ``offset`` of the VM's disk number ``disk_index``, as the guest.

    libvirt names the virtio disks' devices virtio-disk<N> in target order (vda: 0, vdb: 1).
    """
    device = f"/machine/peripheral/virtio-disk{disk_index}/virtio-backend"
    out = hmp(vm.dom, f'qemu-io -d {device} "write -P {pattern:#x} {offset} {length}"')
    out += hmp(vm.dom, f'qemu-io -d {device} "flush"')
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
