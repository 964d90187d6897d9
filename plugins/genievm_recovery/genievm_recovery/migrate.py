"""Moving an instant VM to its own disks (``genievm instant finish``), live or, when its export died, offline.

Live: for each disk, libvirt's block copy (full, not shallow: the overlay and its backing flattened
into one qcow2 file) until it is ready, then a pivot onto the copy; then the VM is defined
persistently from its live XML. A copy that fails (the target full, the source unreadable) ends
without a pivot: the VM runs on, on its overlay, its partial file removed. Run again, it keeps the
disks already moved and waits for a copy of an earlier, killed run that is still going to the same file.

Offline, when the export's process died (QEMU's NBD client does not reconnect to a new server):
the backup is served again, the VM powered off (what the guest wrote is in its overlays), each overlay
converted with its backing into its file, and the VM defined and started on them.
"""

from __future__ import annotations

import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

import libvirt
from genievm_kvm.connection import libvirt_errors
from genievm_kvm.restore import restored_domain_xml

from genievm_core.errors import RestoreTargetExistsError
from genievm_core.jobs import JobRegistry
from genievm_recovery.errors import InstantBootError
from genievm_recovery.instant import Instance, disk_element, disk_source, domain_of, run_tool, stop_export, wait_until

__all__ = ["CopyProgress", "finish"]

CopyProgress = Callable[[str, int, int], None]  # disk, bytes copied, bytes to copy


def finish(
    instance: Instance,
    migrate_to: Path,
    registry: JobRegistry,
    progress: CopyProgress,
    restart_export: Callable[[], None],
) -> dict[str, str]:
    """Move the running VM's disks to ``migrate_to``, define it persistently, stop the export; disk -> file.

    Run again after a failure or a kill: a disk already moved is kept, a copy still under way for the
    same file is waited for, any other is cancelled and made again. When the export is gone (its
    process died: QEMU's NBD client does not reconnect), ``restart_export`` serves the backup again
    and the disks move offline: the VM is powered off (what the guest wrote is in its overlays),
    each overlay with its backing is converted into its file, and the VM starts again on them.
    """
    if instance.state == "starting":
        raise InstantBootError(f"instant {instance.id}: VM {instance.name} has not started")
    if instance.state != "migrated":
        migrate_to = migrate_to.absolute()
        migrate_to.mkdir(parents=True, exist_ok=True)
        instance.migrate_to = str(migrate_to)
        instance.state = "migrating"
        instance.save()
        targets = {disk: migrate_to / f"{instance.name}-{disk}.qcow2" for disk in instance.disks}
        if not instance.serving():
            stop_export(instance, None)  # an nbdkit left behind, still holding QEMU's connection
            instance.socket.unlink(missing_ok=True)
            restart_export()
            _move_offline(instance, targets, progress)
        else:
            with domain_of(instance) as (conn, dom):
                live = dom is not None and dom.isActive()  # not: powered off by an offline move that was killed
                if dom is not None and live:
                    for disk, target in targets.items():
                        _move_disk(instance, dom, disk, target, progress)
                    with libvirt_errors(f"instant {instance.id}: defining VM {instance.name}"):
                        conn.defineXML(_without_stop_policies(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)))
            if not live:
                _move_offline(instance, targets, progress)
        instance.state = "migrated"
        instance.save()
    stop_export(instance, registry)
    moved = dict(instance.targets)
    shutil.rmtree(instance.folder, ignore_errors=True)
    return moved


def _move_offline(instance: Instance, targets: Mapping[str, Path], progress: CopyProgress) -> None:
    with domain_of(instance) as (conn, dom):
        if dom is not None and dom.isActive():
            with libvirt_errors(f"instant {instance.id}: powering off VM {instance.name}"):
                dom.destroy()
        for disk, target in targets.items():
            _claim(instance, disk, target)
            partial = target.with_name(target.name + ".genievm-partial")
            run_tool(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(instance.overlay(disk)), str(partial)],
                     f"instant {instance.id}: copying {disk} to {target}")  # fmt: skip
            partial.rename(target)
            size = target.stat().st_size
            progress(disk, size, size)
        xml = restored_domain_xml((instance.folder / "domain.xml").read_text(), instance.name,
                                  {disk: (target, "qcow2") for disk, target in targets.items()})  # fmt: skip
        with libvirt_errors(f"instant {instance.id}: defining VM {instance.name}"):
            dom = conn.defineXML(xml)
        instance.uuid = str(dom.UUIDString())
        instance.state = "migrated"  # from here on, a run again never converts over the VM's disks
        instance.save()
        with libvirt_errors(f"instant {instance.id}: starting VM {instance.name}"):
            dom.create()


def _claim(instance: Instance, disk: str, target: Path) -> None:
    """Make ``target`` this instance's copy of ``disk``: a file of an earlier run of it is removed, any other
    file is never overwritten."""
    if target.exists():
        if instance.targets.get(disk) != str(target):
            raise RestoreTargetExistsError(f"{target} exists; remove it or choose another --migrate-to")
        target.unlink()  # the partial copy of an earlier run
    instance.targets[disk] = str(target)
    instance.save()


def _move_disk(instance: Instance, dom: libvirt.virDomain, disk: str, target: Path, progress: CopyProgress) -> None:
    if disk_source(dom, disk) == str(target):
        return  # moved by an earlier run
    job = _job_info(dom, disk)
    if job and _mirror_target(dom, disk) != str(target):
        with libvirt_errors(f"instant {instance.id}: cancelling the earlier copy of {disk}"):
            dom.blockJobAbort(disk, 0)
        wait_until(lambda: not _job_info(dom, disk))
        job = {}
    if not job:
        if not instance.serving():
            raise InstantBootError(
                f"instant {instance.id}: its export is gone (its process died), so {disk} cannot be copied; "
                f"the VM keeps its writes in {instance.overlay(disk)}"
            )
        _claim(instance, disk, target)
        dest = f"<disk type='file'><driver type='qcow2'/><source file={quoteattr(str(target))}/></disk>"
        with libvirt_errors(f"instant {instance.id}: copying {disk} to {target}"):
            dom.blockCopy(disk, dest, None, 0)  # the whole chain into one file: not shallow
    caught_up = 0.0
    while True:
        info = _job_info(dom, disk)
        if not info:
            reason = _copy_failure(target)
            target.unlink(missing_ok=True)
            raise InstantBootError(
                f"instant {instance.id}: the copy of {disk} to {target} failed ({reason}); "
                f"VM {instance.name} runs on, its writes kept; run genievm instant finish {instance.id} again"
            )
        progress(disk, int(info["cur"]), int(info["end"]))
        if info["end"] and info["cur"] == info["end"]:
            caught_up = caught_up or time.monotonic()
            if _mirror_ready(dom, disk) or time.monotonic() - caught_up > 30.0:
                break  # libvirt marks the mirror ready on QEMU's event; _pivot retries if it came late
        time.sleep(0.2)
    _pivot(instance, dom, disk, target)


def _pivot(instance: Instance, dom: libvirt.virDomain, disk: str, target: Path) -> None:
    """Switch ``disk`` onto its copy. cur == end and the mirror's ``ready='yes'`` can both show before
    QEMU's job has moved to its ready state (a copy made again after a failed one), so a refusal as
    "not ready" is retried for a while rather than reported."""
    deadline = time.monotonic() + 60.0
    while True:
        try:
            dom.blockJobAbort(disk, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
            return
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_BLOCK_COPY_ACTIVE or time.monotonic() > deadline:
                with libvirt_errors(f"instant {instance.id}: switching {disk} to {target}"):
                    raise
        time.sleep(0.2)


def _copy_failure(target: Path) -> str:
    try:
        if shutil.disk_usage(target.parent).free < 1 << 20:
            return f"no space left on {target.parent}"
    except OSError:
        pass
    return "QEMU stopped the block copy; libvirt's log of the VM says why"


def _job_info(dom: libvirt.virDomain, disk: str) -> dict[str, int]:
    with libvirt_errors(f"VM {dom.name()}: block job of {disk}"):
        return dict(dom.blockJobInfo(disk, 0) or {})


def _mirror_ready(dom: libvirt.virDomain, disk: str) -> bool:
    element = disk_element(dom, disk)
    mirror = element.find("mirror") if element is not None else None
    return mirror is not None and mirror.get("ready") == "yes"


def _mirror_target(dom: libvirt.virDomain, disk: str) -> str | None:
    element = disk_element(dom, disk)
    source = element.find("mirror/source") if element is not None else None
    return source.get("file") if source is not None else None


def _without_stop_policies(xml: str) -> str:
    root = ET.fromstring(xml)
    for driver in root.iterfind("devices/disk/driver"):
        driver.attrib.pop("error_policy", None)
        driver.attrib.pop("rerror_policy", None)
    return ET.tostring(root, encoding="unicode")
