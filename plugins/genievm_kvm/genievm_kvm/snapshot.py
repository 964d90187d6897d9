"""The fallback for hosts whose libvirt has no backup API: an internal qcow2 snapshot.

Create an internal snapshot of the running VM (all disks at one instant), read each disk's
snapshot with ``qemu-nbd -l`` in shared read-only mode, and delete the snapshot on exit,
whatever happened. There is no changed-block tracking on this path: incrementals compare
chunk ids with the parent's index.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import libvirt

from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger
from genievm_core.models.vm import VMDescription
from genievm_core.plugin.protocols import BackupRequest
from genievm_kvm.chain import new_checkpoint_name
from genievm_kvm.connection import libvirt_errors
from genievm_kvm.nbd_export import READERS, NBDClient, qemu_nbd
from genievm_kvm.quiesce import frozen
from genievm_kvm.source import Changes, NBDDiskSource, Session

__all__ = ["snapshot_backup"]

log = get_logger("genievm.kvm.snapshot")
REASON = "internal-snapshot backups have no changed-block tracking"


@contextmanager
def snapshot_backup(
    dom: libvirt.virDomain, vm: VMDescription, request: BackupRequest, run_dir: Path
) -> Iterator[Session]:
    disks = [d for d in vm.disks if d.name in request.disks]
    not_qcow2 = [d.name for d in disks if d.format != "qcow2"]
    if not_qcow2:
        raise ProviderError(f"provider kvm: internal snapshots need qcow2 disks; {', '.join(not_qcow2)} are not")
    name = new_checkpoint_name(request.chain_id)
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "description").text = "GenieVM backup snapshot (deleted when the backup ends)"
    with frozen(dom, vm.name, request.quiesce), libvirt_errors(f"VM {vm.name}: creating an internal snapshot"):
        snap = dom.snapshotCreateXML(ET.tostring(root, encoding="unicode"), libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
    log.info("kvm.snapshot_created", vm=vm.name, snapshot=name)
    try:
        with ExitStack() as stack:
            sources = {}
            for disk in disks:
                sock = run_dir / f"{secrets.token_hex(4)}.sock"
                stack.enter_context(
                    qemu_nbd(Path(disk.location), "qcow2", sock, export=disk.name, snapshot=name, force_share=True)
                )
                source = NBDDiskSource(disk, NBDClient(sock, disk.name, readers=READERS), Changes(reason=REASON))
                stack.callback(source.close)
                sources[disk.name] = source
            yield Session(sources)
    finally:
        with libvirt_errors(f"VM {vm.name}: deleting internal snapshot {name}"):
            snap.delete()
        log.info("kvm.snapshot_deleted", vm=vm.name, snapshot=name)
