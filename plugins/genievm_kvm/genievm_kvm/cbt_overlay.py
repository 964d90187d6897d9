"""Changed-block tracking for raw disks: a qcow2 overlay whose data file is the raw disk.

A raw file or block device (LVM, a ZFS volume) holds no dirty bitmap, so each backup of it reads
the whole disk and compares chunk ids. ``enable_cbt`` puts a small qcow2 image in front of it with
``data-file`` = the raw disk and ``data_file_raw=on``: every guest write still lands in the raw disk,
which stays a complete raw image, and the qcow2 holds only its metadata and the dirty bitmaps that
libvirt's checkpoints (and qemu-img for a stopped VM) keep. The domain's disk then is a qcow2 file,
``<driver name='qemu' type='qcow2'/><source file='VM-vda.cbt.qcow2'/>``; QEMU finds the raw disk in
the overlay's header (libvirt 9 keeps no ``<dataStore>`` in a persistent definition).

The disk elements as they were are kept in the domain's metadata, so ``disable_cbt`` puts them back
exactly, removes the overlays and the checkpoints whose bitmaps went with them. Both need the VM shut
off: libvirt cannot swap a running disk's format.
"""

from __future__ import annotations

import io
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import libvirt

from genievm_core.errors import ConfigError, ProviderError
from genievm_kvm.connection import libvirt_errors
from genievm_kvm.domain import state

__all__ = ["OVERLAY_SUFFIX", "Change", "disable_cbt", "enable_cbt"]

OVERLAY_SUFFIX = ".cbt.qcow2"
METADATA_URI = "urn:genievm:kvm:cbt-overlay"
SAVED = f"{{{METADATA_URI}}}disks"  # <genievm:disks> in <metadata>: the disk elements as they were, as text
ET.register_namespace("genievm", METADATA_URI)


@dataclass(frozen=True)
class Change:
    """One disk put behind (or taken out from behind) its overlay."""

    disk: str
    raw: str  # the raw file or device, which keeps all data
    overlay: str  # the qcow2 holding metadata and bitmaps


def enable_cbt(dom: libvirt.virDomain, disks: list[str], overlay_dir: Path | None) -> list[Change]:
    """Put each raw disk of ``disks`` (all raw disks when empty) behind a qcow2 overlay; the VM must be shut off."""
    name = dom.name()
    _stopped(dom, "enable-cbt")
    root = _inactive_xml(dom)
    if _saved(root) is not None:
        raise ConfigError(f"invalid configuration: VM {name} has CBT enabled already (disable-cbt undoes it)")
    candidates = {_target(d): d for d in root.iterfind("devices/disk") if d.get("device", "disk") == "disk"}
    unknown = set(disks) - set(candidates)
    if unknown:
        raise ConfigError(f"invalid configuration: --disk: VM {name} has no disk {sorted(unknown)}")
    chosen = [t for t in candidates if not disks or t in disks]
    raw = [t for t in chosen if _is_raw(candidates[t])]
    if disks and set(chosen) - set(raw):
        others = ", ".join(f"{t} ({_format(candidates[t])})" for t in sorted(set(chosen) - set(raw)))
        raise ConfigError(f"invalid configuration: --disk: VM {name}: {others} is not a raw file or device")
    if not raw:
        raise ConfigError(f"invalid configuration: VM {name} has no raw disk to put behind a qcow2 overlay")
    saved = ET.Element(SAVED)
    saved.text = "".join(ET.tostring(candidates[t], encoding="unicode") for t in raw)
    changes = []
    try:
        for target in raw:
            changes.append(_put_behind_overlay(dom, candidates[target], target, overlay_dir))
        metadata = root.find("metadata")
        if metadata is None:
            metadata = ET.SubElement(root, "metadata")
        metadata.append(saved)
        with libvirt_errors(f"VM {name}: defining it with its overlays"):
            dom.connect().defineXML(ET.tostring(root, encoding="unicode"))
    except BaseException:
        for change in changes:
            Path(change.overlay).unlink(missing_ok=True)
        raise
    return changes


def disable_cbt(dom: libvirt.virDomain) -> tuple[list[Change], list[str]]:
    """Put back the disks as they were before ``enable_cbt``; return the changes and the checkpoints removed."""
    name = dom.name()
    _stopped(dom, "disable-cbt")
    root = _inactive_xml(dom)
    saved = _saved(root)
    if saved is None:
        raise ConfigError(f"invalid configuration: VM {name} has no CBT overlays of GenieVM (enable-cbt makes them)")
    devices = root.find("devices")
    assert devices is not None  # enable_cbt found disks there
    current = {_target(d): d for d in devices.iterfind("disk")}
    changes = []
    for original in saved:
        target = _target(original)
        disk = current.get(target)
        if disk is None:
            raise ProviderError(f"provider kvm: VM {name} has no disk {target} any more; put it back by hand")
        overlay = disk.find("source")
        changes.append(Change(target, _source_path(original), overlay.get("file", "") if overlay is not None else ""))
        devices.insert(list(devices).index(disk), original)
        devices.remove(disk)
    with libvirt_errors(f"VM {name}: listing its checkpoints"):
        checkpoints = dom.listAllCheckpoints()
    removed = []
    for checkpoint in checkpoints:  # their bitmaps are in the overlays, which go
        with libvirt_errors(f"VM {name}: removing checkpoint {checkpoint.getName()}"):
            removed.append(checkpoint.getName())
            checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    metadata = root.find("metadata")
    if metadata is not None:
        for el in metadata.findall(SAVED):
            metadata.remove(el)
        if not len(metadata):
            root.remove(metadata)
    with libvirt_errors(f"VM {name}: defining it without its overlays"):
        dom.connect().defineXML(ET.tostring(root, encoding="unicode"))
    for change in changes:
        if change.overlay.endswith(OVERLAY_SUFFIX):
            Path(change.overlay).unlink(missing_ok=True)
    return changes, removed


def _put_behind_overlay(dom: libvirt.virDomain, disk: ET.Element, target: str, overlay_dir: Path | None) -> Change:
    raw = _source_path(disk)
    kind = disk.get("type", "file")
    if kind == "block" and overlay_dir is None:
        raise ConfigError(
            f"invalid configuration: --overlay-dir: disk {target} is the device {raw}; give a folder for its overlay"
        )
    overlay = (overlay_dir or Path(raw).parent) / f"{dom.name()}-{target}{OVERLAY_SUFFIX}"
    if overlay.exists():
        raise ConfigError(f"invalid configuration: {overlay} exists; remove it or give another --overlay-dir")
    with libvirt_errors(f"disk {target}: reading its size"):
        size = dom.blockInfo(target)[0]
    # qemu-img create truncates the data file it is given: make the overlay over a placeholder, then name the disk
    placeholder = overlay.with_name(f".{overlay.name}.data")
    try:
        _qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={placeholder},data_file_raw=on", str(overlay),
                  str(size))  # fmt: skip
        _qemu_img("amend", "-f", "qcow2", "-o", f"data_file={raw}", str(overlay))
    except BaseException:
        overlay.unlink(missing_ok=True)
        raise
    finally:
        placeholder.unlink(missing_ok=True)
    for el in disk.findall("source"):
        disk.remove(el)
    driver = disk.find("driver")
    if driver is None:
        driver = ET.SubElement(disk, "driver", name="qemu")
    driver.set("type", "qcow2")
    disk.insert(list(disk).index(driver) + 1, ET.Element("source", file=str(overlay)))
    disk.set("type", "file")
    return Change(target, raw, str(overlay))


def _qemu_img(*args: str) -> None:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProviderError(f"provider kvm: qemu-img {args[0]}: {proc.stderr.strip()}")


def _stopped(dom: libvirt.virDomain, command: str) -> None:
    if dom.isActive():
        raise ProviderError(
            f"provider kvm: VM {dom.name()} is {state(dom)}; {command} changes the format of its disks, which "
            "libvirt cannot do while it runs: shut it down first"
        )
    if not dom.isPersistent():
        raise ProviderError(f"provider kvm: VM {dom.name()} is transient; {command} needs a defined VM")


def _inactive_xml(dom: libvirt.virDomain) -> ET.Element:
    """The persistent XML, parsed with the prefixes of its metadata kept (written back, they stay as they were)."""
    with libvirt_errors(f"VM {dom.name()}: reading its XML"):
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    for _event, (prefix, uri) in ET.iterparse(io.StringIO(xml), events=("start-ns",)):
        if prefix:
            ET.register_namespace(prefix, uri)
    return ET.fromstring(xml)


def _saved(root: ET.Element) -> list[ET.Element] | None:
    """The disk elements as ``enable_cbt`` found them, or None when it did not put overlays there."""
    saved = root.find(f"metadata/{SAVED}")
    if saved is None:
        return None
    return list(ET.fromstring(f"<disks>{saved.text or ''}</disks>"))


def _target(disk: ET.Element) -> str:
    target = disk.find("target")
    return target.get("dev", "") if target is not None else ""


def _is_raw(disk: ET.Element) -> bool:
    """A raw file or device with a source: what an overlay can go in front of."""
    return _format(disk) == "raw" and disk.get("type", "file") in ("file", "block") and bool(_source_path(disk))


def _format(disk: ET.Element) -> str:
    driver = disk.find("driver")
    return driver.get("type", "raw") if driver is not None else "raw"


def _source_path(disk: ET.Element) -> str:
    source = disk.find("source")
    if source is None:
        return ""
    return source.get("file") or source.get("dev") or ""
