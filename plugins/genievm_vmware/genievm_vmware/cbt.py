"""vSphere changed-block tracking: turning it on, and asking which areas of a disk changed.

Turning CBT on takes effect only after the VM's disks are reopened, which a
snapshot create-and-remove cycle does (vSphere's documented way). A changeId has
the form ``<uuid>/<sequence>``; when the uuid part of a stored changeId differs
from the disk's current one, CBT was reset since (the disk was moved, restored
or CBT turned off and on) and every changed area since that changeId is unknown.
"""

from __future__ import annotations

from pyVmomi import vim, vmodl

from genievm_core.errors import CBTError
from genievm_core.logging import get_logger
from genievm_core.models.extents import Extent, normalize
from genievm_vmware.connection import fault_message, wait
from genievm_vmware.snapshot import genievm_snapshot

__all__ = ["ALL_AREAS", "CBTRefused", "changed_areas", "enable_cbt", "is_reset"]

log = get_logger("genievm.vmware.cbt")
ALL_AREAS = "*"  # QueryChangedDiskAreas' changeId for every allocated area


class CBTRefused(CBTError):
    """vSphere refused the changeId (unknown, or CBT was reset): fall back, do not fail."""


def cbt_enabled(vm: vim.VirtualMachine) -> bool:
    return bool(vm.config is not None and vm.config.changeTrackingEnabled)


def enable_cbt(vm: vim.VirtualMachine) -> None:
    """Turn CBT on and make it take effect with a snapshot cycle."""
    spec = vim.vm.ConfigSpec(changeTrackingEnabled=True)
    wait(vm.ReconfigVM_Task(spec), f"VM {vm.name}: enabling changed-block tracking")
    with genievm_snapshot(vm, quiesce=False, purpose="cbt-on"):
        pass
    log.info("vmware.cbt_enabled", vm=vm.name)


def is_reset(stored: str, current: str | None) -> bool:
    """True when ``stored`` comes from an earlier CBT epoch than the disk's ``current`` changeId."""
    if not current or "/" not in stored or "/" not in current:
        return False
    return stored.rsplit("/", 1)[0] != current.rsplit("/", 1)[0]


def changed_areas(
    vm: vim.VirtualMachine, snapshot: vim.vm.Snapshot, device_key: int, capacity: int, change_id: str
) -> list[Extent]:
    """Areas changed since ``change_id`` (``*``: every allocated area), paging through the disk."""
    extents: list[Extent] = []
    offset = 0
    while offset < capacity:
        try:
            info = vm.QueryChangedDiskAreas(
                snapshot=snapshot, deviceKey=device_key, startOffset=offset, changeId=change_id
            )
        except (vmodl.fault.InvalidArgument, vim.fault.FileFault) as exc:
            raise CBTRefused(
                f"changed-block tracking failed for disk disk-{device_key}: vSphere refused changeId "
                f"{change_id!r}: {fault_message(exc)}"
            ) from exc
        except vmodl.MethodFault as exc:
            raise CBTError(f"changed-block tracking failed for disk disk-{device_key}: {fault_message(exc)}") from exc
        extents += [Extent(int(a.start), int(a.length)) for a in info.changedArea or []]
        covered = int(info.startOffset) + int(info.length)
        if covered <= offset:
            break  # an answer that covers nothing would loop forever
        offset = covered
    return normalize(extents)
