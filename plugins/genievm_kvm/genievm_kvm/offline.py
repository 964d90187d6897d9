"""Backups of stopped VMs: each disk served read-only by ``qemu-nbd``, which also holds the
image's lock so the VM cannot start meanwhile.

qcow2 disks keep a persistent dirty bitmap per backup (``qemu-img bitmap``): an incremental
exports the parent's bitmap with ``qemu-nbd -B`` and reads only its dirty extents. The bitmap
of a libvirt checkpoint (the parent was taken while the VM ran) serves as well. Other
formats are read whole (allocated extents only) and compared by chunk id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import libvirt

from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger
from genievm_core.models.vm import DiskInfo, VMDescription
from genievm_core.plugin.protocols import BackupRequest, ChangedExtents
from genievm_kvm.chain import BITMAP_SOURCE, chain_prefix, new_checkpoint_name
from genievm_kvm.connection import libvirt_errors
from genievm_kvm.lvm_thin import (
    DETAIL_LV,
    DETAIL_SNAPSHOT,
    DETAIL_VG,
    LVMThinCBT,
    create_thin_snapshot,
    remove_thin_snapshot,
)
from genievm_kvm.nbd_export import ALLOCATION, READERS, NBDClient, socket_dir
from genievm_kvm.remote import Host, host_for
from genievm_kvm.source import Changes, NBDDiskSource, Session

__all__ = ["bitmap_changes", "bitmaps", "offline_backup"]

log = get_logger("genievm.kvm.offline")
SOURCE = BITMAP_SOURCE


def bitmaps(image: Path, host: Host) -> dict[str, list[str]]:
    """The persistent bitmaps of a qcow2 image on ``host`` and their flags (``auto``: enabled, ``in-use``:
    broken)."""
    proc = host.run(["qemu-img", "info", "-U", "--output=json", str(image)])
    if proc.returncode != 0:
        raise ProviderError(f"provider kvm: qemu-img info {image}: {proc.stderr.strip()}")
    data = json.loads(proc.stdout).get("format-specific", {}).get("data", {})
    return {b["name"]: list(b.get("flags", [])) for b in data.get("bitmaps", [])}


def _qemu_img_bitmap(host: Host, image: Path, bitmap: str, *operations: str) -> None:
    proc = host.run(["qemu-img", "bitmap", *operations, str(image), bitmap])
    if proc.returncode != 0:
        raise ProviderError(
            f"provider kvm: qemu-img bitmap {' '.join(operations)} {image} {bitmap}: {proc.stderr.strip()}"
        )


@contextmanager
def offline_backup(
    dom: libvirt.virDomain, vm: VMDescription, request: BackupRequest, host: Host, checkpoints: set[str]
) -> Iterator[Session]:
    """``host``: where the images are (this one, or over SSH); ``checkpoints``: names of the VM's libvirt
    checkpoints, whose bitmaps are libvirt's to delete."""
    disks = [d for d in vm.disks if d.name in request.disks]
    for disk in disks:
        if disk.storage_kind == "network":
            raise ProviderError(
                f"provider kvm: disk {disk.name} is a network disk; it can be backed up only while "
                "the VM runs (backup API)"
            )
        if disk.storage_kind == "lvm-thin" and host.remote and request.enable_cbt:
            raise ProviderError(
                f"provider kvm: disk {disk.name} is a thin LV on a remote host; thin snapshots are made "
                "on the host itself: run GenieVM there (or give enableCBT false)"
            )
    backup = _OfflineBackup(request, host)
    with ExitStack() as stack:
        try:
            session = Session({d.name: backup.open(d, stack) for d in disks})
            with libvirt_errors(f"VM {vm.name}: checking its state"):
                if dom.isActive():  # it started before qemu-nbd took the locks: no point in time
                    raise ProviderError(f"provider kvm: VM {vm.name} started during the backup; run it again")
            yield session
        except BaseException:
            stack.close()  # qemu-nbd stops and releases the images before bitmaps change
            backup.undo()
            raise
    backup.retire_parents(checkpoints)


class _OfflineBackup:
    """The new bitmaps and thin snapshots of one backup: undone when it fails, the parents' retired when not."""

    def __init__(self, request: BackupRequest, host: Host) -> None:
        self.request = request
        self.host = host
        self.prefix = chain_prefix(request.chain_id)
        self.new_name = new_checkpoint_name(request.chain_id)
        self.bitmapped: list[DiskInfo] = []  # qcow2 disks given the new bitmap
        self.thin: list[tuple[DiskInfo, str]] = []  # thin LVs and their new snapshot

    def open(self, disk: DiskInfo, stack: ExitStack) -> NBDDiskSource:
        image = Path(disk.location)
        if disk.storage_kind == "lvm-thin" and self.request.enable_cbt:
            vg, lv = disk.details[DETAIL_VG], disk.details[DETAIL_LV]
            snapshot = f"{lv}.{self.new_name}"
            create_thin_snapshot(vg, lv, snapshot)
            self.thin.append((disk, snapshot))
            changes, image = self._thin_changes(disk, snapshot), Path(f"/dev/{vg}/{snapshot}")
        else:
            changes = self._changes(disk)
            if changes.next_token:
                _qemu_img_bitmap(self.host, image, self.new_name, "--add", "--enable")
                self.bitmapped.append(disk)
        sock = stack.enter_context(self.host.serve_image(image, disk.format, export=disk.name, bitmap=changes.base))
        contexts = (ALLOCATION, changes.context) if changes.context else (ALLOCATION,)
        source = NBDDiskSource(disk, NBDClient(sock, disk.name, contexts, readers=READERS), changes)
        stack.callback(source.close)
        return source

    def _changes(self, disk: DiskInfo) -> Changes:
        if not self.request.enable_cbt:
            return Changes(reason="CBT disabled by enableCBT")
        if disk.storage_kind != "qcow2-file":
            return Changes(reason=f"a {disk.storage_kind} disk of a stopped VM has no dirty bitmaps")
        token = self.request.tokens.get(disk.name)
        reason = _bitmap_problem(disk, token, self.prefix, self.host)
        if reason:
            return Changes(reason=reason, next_token=self.new_name)
        return Changes(SOURCE, token, f"qemu:dirty-bitmap:{token}", next_token=self.new_name)

    def _thin_changes(self, disk: DiskInfo, snapshot: str) -> Changes:
        """Changes between the parent's thin snapshot and the new one (device-mapper only: an LVM host)."""
        token = self.request.tokens.get(disk.name)
        if token and self.prefix not in token:
            return Changes(reason=f"thin snapshot {token} belongs to another repository", next_token=snapshot)
        known = LVMThinCBT().changed_extents(replace(disk, details={**disk.details, DETAIL_SNAPSHOT: snapshot}), token)
        if known.extents is None:
            return Changes(reason=known.reason or "no thin snapshot to compare with", next_token=snapshot)
        return Changes(source=known.source, next_token=snapshot, known=known)

    def undo(self) -> None:
        for disk in self.bitmapped:
            _qemu_img_bitmap(self.host, Path(disk.location), self.new_name, "--remove")
        for disk, snapshot in self.thin:
            remove_thin_snapshot(disk.details[DETAIL_VG], snapshot)

    def retire_parents(self, checkpoints: set[str]) -> None:
        """Remove this repository's older bitmaps (not libvirt's checkpoints) and thin snapshots."""
        for disk in self.bitmapped:
            for name in bitmaps(Path(disk.location), self.host):
                if name.startswith(self.prefix) and name != self.new_name and name not in checkpoints:
                    _qemu_img_bitmap(self.host, Path(disk.location), name, "--remove")
                    log.info("kvm.bitmap_removed", disk=disk.name, bitmap=name)
        for disk, _ in self.thin:
            old = self.request.tokens.get(disk.name)
            if old and self.prefix in old:
                remove_thin_snapshot(disk.details[DETAIL_VG], old)


def _bitmap_problem(disk: DiskInfo, token: str | None, prefix: str, host: Host) -> str | None:
    if not token:
        return "the parent backup has no bitmap for this disk"
    if not token.startswith(prefix):
        return f"bitmap {token} belongs to another repository"
    flags = bitmaps(Path(disk.location), host).get(token)
    if flags is None:
        return f"bitmap {token} is not in {disk.location} (deleted, or the image was replaced)"
    if "in-use" in flags:
        return f"bitmap {token} in {disk.location} is inconsistent (QEMU stopped without saving it)"
    if "auto" not in flags:
        return f"bitmap {token} in {disk.location} is disabled"
    return None


def bitmap_changes(disk: DiskInfo, token: str | None) -> ChangedExtents:
    """The extents the bitmap ``token`` marks in a stopped VM's qcow2 image (the CBT source on its own), on
    the host of the disk's ``uri`` (``describe_vm`` puts it in ``details``)."""
    host = host_for(str(disk.details.get("uri", "")), socket_dir(None))  # SSH keys only: no password here
    problem = _bitmap_problem(disk, token, token or "", host)
    if problem or token is None:
        return ChangedExtents.unavailable(problem or "no token")
    context = f"qemu:dirty-bitmap:{token}"
    with host.serve_image(Path(disk.location), "qcow2", export=disk.name, bitmap=token) as sock:
        client = NBDClient(sock, disk.name, (context,))
        try:
            return ChangedExtents(client.dirty(context), SOURCE)
        finally:
            client.close()
