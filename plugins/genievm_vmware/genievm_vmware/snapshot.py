"""GenieVM's snapshots: created for a backup, always removed, and swept when a crash left one.

A GenieVM snapshot is named ``genievm-...`` and its description starts with
``GENIEVM_TAG``; nothing else is ever removed. Memory is never included; the
guest is quiesced (VMware Tools) only when asked.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from pyVmomi import vim, vmodl

from genievm_core.errors import GenieVMError, ProviderError
from genievm_core.logging import get_logger
from genievm_vmware.connection import raise_for, vsphere_errors, wait

__all__ = ["GENIEVM_TAG", "SnapshotGone", "genievm_snapshot", "genievm_snapshots", "remove_snapshot", "sweep_stale"]

log = get_logger("genievm.vmware.snapshot")
PREFIX = "genievm-"
GENIEVM_TAG = "Made by GenieVM for a backup; removed when it ends."


def _walk(trees: list[vim.vm.SnapshotTree] | None) -> Iterator[vim.vm.SnapshotTree]:
    for tree in trees or []:
        yield tree
        yield from _walk(tree.childSnapshotList)


def genievm_snapshots(vm: vim.VirtualMachine) -> list[vim.vm.SnapshotTree]:
    info = vm.snapshot
    trees = info.rootSnapshotList if info is not None else []
    return [t for t in _walk(trees) if str(t.name).startswith(PREFIX) and str(t.description).startswith(GENIEVM_TAG)]


class SnapshotGone(ProviderError):
    """provider vmware: VM {vm}: snapshot {name} was removed by someone else during the backup ..."""


def remove_snapshot(vm: vim.VirtualMachine, snapshot: vim.vm.Snapshot, name: str) -> None:
    """Remove ``snapshot``; ``SnapshotGone`` when it no longer exists (removed by someone else)."""
    what = f"VM {vm.name}: removing snapshot {name}"
    try:
        task = snapshot.RemoveSnapshot_Task(removeChildren=False)
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise SnapshotGone(
            f"provider vmware: VM {vm.name}: snapshot {name} was removed by someone else during the backup, so "
            "its disks took writes while being read and the point in time is lost; run the backup again"
        ) from exc
    except vmodl.MethodFault as exc:
        raise_for(exc, what)
    wait(task, what)
    log.info("vmware.snapshot_removed", vm=vm.name, snapshot=name)


def sweep_stale(vm: vim.VirtualMachine) -> int:
    """Remove GenieVM snapshots a crashed run left behind; how many were removed."""
    with vsphere_errors(f"VM {vm.name}: listing snapshots"):
        stale = genievm_snapshots(vm)
    for tree in stale:
        log.warning("vmware.stale_snapshot", vm=vm.name, snapshot=tree.name, created=str(tree.createTime))
        remove_snapshot(vm, tree.snapshot, tree.name)
    return len(stale)


def create_snapshot(vm: vim.VirtualMachine, *, quiesce: bool, purpose: str) -> tuple[vim.vm.Snapshot, str]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{PREFIX}{purpose}-{stamp}-{secrets.token_hex(3)}"
    task = vm.CreateSnapshot_Task(name=name, description=GENIEVM_TAG, memory=False, quiesce=quiesce)
    snapshot = wait(task, f"VM {vm.name}: creating snapshot {name}")
    log.info("vmware.snapshot_created", vm=vm.name, snapshot=name, quiesced=quiesce)
    return snapshot, name


@contextmanager
def genievm_snapshot(vm: vim.VirtualMachine, *, quiesce: bool, purpose: str = "backup") -> Iterator[vim.vm.Snapshot]:
    """A new snapshot, removed on leaving however the body ends."""
    snapshot, name = create_snapshot(vm, quiesce=quiesce, purpose=purpose)
    try:
        yield snapshot
    except BaseException:
        try:
            remove_snapshot(vm, snapshot, name)
        except GenieVMError as exc:  # the body's error is the one to report; this one is logged
            log.error("vmware.snapshot_not_removed", vm=vm.name, snapshot=name, error=str(exc))
        raise
    remove_snapshot(vm, snapshot, name)
