"""Backups of stopped VMs: each disk served read-only by ``qemu-nbd``, which also holds the
image's lock so the VM cannot start meanwhile.

qcow2 disks keep a persistent dirty bitmap per backup (``qemu-img bitmap``): an incremental
exports the parent's bitmap with ``qemu-nbd -B`` and reads only its dirty extents. The bitmap
of a libvirt checkpoint (the parent was taken while the VM ran) serves as well. Other
formats are read whole (allocated extents only) and compared by chunk id.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import libvirt
import structlog

from genievm_core.errors import ProviderError
from genievm_core.models.vm import DiskInfo, VMDescription
from genievm_core.plugin.protocols import BackupRequest, ChangedExtents
from genievm_kvm.cbt import Qcow2BitmapCBT, chain_prefix, new_checkpoint_name
from genievm_kvm.connection import libvirt_errors
from genievm_kvm.nbd_export import ALLOCATION, NBDClient, qemu_nbd, socket_dir
from genievm_kvm.source import Changes, NBDDiskSource, Session

__all__ = ["bitmap_changes", "bitmaps", "offline_backup"]

log = structlog.get_logger("genievm.kvm.offline")
SOURCE = Qcow2BitmapCBT.name


def bitmaps(image: Path) -> dict[str, list[str]]:
    """The persistent bitmaps of a qcow2 image and their flags (``auto``: enabled, ``in-use``: broken)."""
    proc = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(image)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProviderError(f"provider kvm: qemu-img info {image}: {proc.stderr.strip()}")
    data = json.loads(proc.stdout).get("format-specific", {}).get("data", {})
    return {b["name"]: list(b.get("flags", [])) for b in data.get("bitmaps", [])}


def _qemu_img_bitmap(image: Path, bitmap: str, *operations: str) -> None:
    proc = subprocess.run(["qemu-img", "bitmap", *operations, str(image), bitmap], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProviderError(
            f"provider kvm: qemu-img bitmap {' '.join(operations)} {image} {bitmap}: {proc.stderr.strip()}"
        )


@contextmanager
def offline_backup(
    dom: libvirt.virDomain, vm: VMDescription, request: BackupRequest, run_dir: Path, checkpoints: set[str]
) -> Iterator[Session]:
    """``checkpoints``: names of the VM's libvirt checkpoints, whose bitmaps are libvirt's to delete."""
    disks = [d for d in vm.disks if d.name in request.disks]
    for disk in disks:
        if disk.storage_kind == "network":
            raise ProviderError(
                f"provider kvm: disk {disk.name} is a network disk; it can be backed up only while "
                "the VM runs (backup API)"
            )
    prefix = chain_prefix(request.chain_id)
    new_bitmap = new_checkpoint_name(request.chain_id)
    added: list[DiskInfo] = []
    ok = False
    with ExitStack() as stack:
        try:
            sources = {}
            for disk in disks:
                changes = _changes(disk, request, prefix, new_bitmap)
                if changes.next_token:
                    _qemu_img_bitmap(Path(disk.location), new_bitmap, "--add", "--enable")
                    added.append(disk)
                sock = run_dir / f"{secrets.token_hex(4)}.sock"
                stack.enter_context(
                    qemu_nbd(Path(disk.location), disk.format, sock, export=disk.name, bitmap=changes.base)
                )
                contexts = (ALLOCATION, changes.context) if changes.context else (ALLOCATION,)
                source = NBDDiskSource(disk, NBDClient(sock, disk.name, contexts), changes)
                stack.callback(source.close)
                sources[disk.name] = source
            with libvirt_errors(f"VM {vm.name}: checking its state"):
                if dom.isActive():  # it started before qemu-nbd took the locks: no point in time
                    raise ProviderError(f"provider kvm: VM {vm.name} started during the backup; run it again")
            yield Session(sources)
            ok = True
        finally:
            stack.close()  # qemu-nbd stops and releases the images before bitmaps change
            for disk in added if not ok else []:
                _qemu_img_bitmap(Path(disk.location), new_bitmap, "--remove")
    for disk in added:  # the new bitmap is the one the repository needs now
        stale = [b for b in bitmaps(Path(disk.location)) if b.startswith(prefix) and b != new_bitmap]
        for name in stale:
            if name not in checkpoints:
                _qemu_img_bitmap(Path(disk.location), name, "--remove")
                log.info("kvm.bitmap_removed", disk=disk.name, bitmap=name)


def _changes(disk: DiskInfo, request: BackupRequest, prefix: str, new_bitmap: str) -> Changes:
    if not request.enable_cbt:
        return Changes(reason="CBT disabled by enableCBT")
    if disk.storage_kind != "qcow2-file":
        return Changes(reason=f"a {disk.storage_kind} disk of a stopped VM has no dirty bitmaps")
    token = request.tokens.get(disk.name)
    reason = _bitmap_problem(disk, token, prefix)
    if reason:
        return Changes(reason=reason, next_token=new_bitmap)
    return Changes(SOURCE, token, f"qemu:dirty-bitmap:{token}", next_token=new_bitmap)


def _bitmap_problem(disk: DiskInfo, token: str | None, prefix: str) -> str | None:
    if not token:
        return "the parent backup has no bitmap for this disk"
    if not token.startswith(prefix):
        return f"bitmap {token} belongs to another repository"
    flags = bitmaps(Path(disk.location)).get(token)
    if flags is None:
        return f"bitmap {token} is not in {disk.location} (deleted, or the image was replaced)"
    if "in-use" in flags:
        return f"bitmap {token} in {disk.location} is inconsistent (QEMU stopped without saving it)"
    if "auto" not in flags:
        return f"bitmap {token} in {disk.location} is disabled"
    return None


def bitmap_changes(disk: DiskInfo, token: str | None) -> ChangedExtents:
    """The extents the bitmap ``token`` marks in a stopped VM's qcow2 image (the CBT source on its own)."""
    problem = _bitmap_problem(disk, token, token or "")
    if problem or token is None:
        return ChangedExtents.unavailable(problem or "no token")
    sock = socket_dir(None) / f"{secrets.token_hex(4)}.sock"
    context = f"qemu:dirty-bitmap:{token}"
    with qemu_nbd(Path(disk.location), "qcow2", sock, export=disk.name, bitmap=token):
        client = NBDClient(sock, disk.name, (context,))
        try:
            return ChangedExtents(client.dirty(context), SOURCE)
        finally:
            client.close()
