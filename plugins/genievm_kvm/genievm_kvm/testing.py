"""A small VM for tests, benchmarks and the demo: no OS needed.

``scratch_domain_xml`` describes a q35 VM with 64 MiB and virtio disks (``kvm``
where /dev/kvm is writable, ``qemu`` otherwise); start it paused, since backups
work the same on a paused VM. ``qemu_io`` runs a qemu-io command on one of its
disks as the guest would write (through the HMP monitor); ``remove_vm`` destroys
and undefines it with its checkpoint and snapshot metadata.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import libvirt
import libvirt_qemu

__all__ = ["qemu_io", "remove_vm", "scratch_domain_xml"]


def scratch_domain_xml(name: str, disks: dict[str, tuple[Path, str]]) -> str:
    """``disks``: target (vda, ...) -> (image, format)."""
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


def qemu_io(dom: libvirt.virDomain, disk_index: int, command: str) -> str:
    """Run ``command`` (``write -P 0xab 1M 64k``, ``flush``, ...) on the VM's disk number ``disk_index``.

    libvirt names the virtio disks' devices virtio-disk<N> in target order (vda: 0, vdb: 1).
    qemu-io answers only when something failed.
    """
    device = f"/machine/peripheral/virtio-disk{disk_index}/virtio-backend"
    hmp = f'qemu-io -d {device} "{command}"'
    return str(libvirt_qemu.qemuMonitorCommand(dom, hmp, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP))


def remove_vm(dom: libvirt.virDomain) -> None:
    """Destroy (if running) and undefine, with checkpoint and snapshot metadata; gone already is fine."""
    try:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
