"""What a libvirt domain's XML says about its disks, and the VM description the core stores."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from genievm_core.errors import ProviderError
from genievm_core.logging import redact_url
from genievm_core.models.vm import DiskInfo, StorageKind, VMDescription, VMRef
from genievm_kvm.connection import libvirt_errors
from genievm_kvm.firmware import firmware_of
from genievm_kvm.lvm_thin import DETAIL_LV, DETAIL_VG, lookup_thin_lv, split_lv_path

__all__ = ["DiskSpec", "describe", "disk_specs", "vm_ref"]

STATES = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


@dataclass(frozen=True)
class DiskSpec:
    """One ``<disk device='disk'>`` of a domain."""

    target: str  # vda, sdb, ...
    disk_type: str  # file, block, volume, network
    format: str  # qcow2, raw, ...
    source: str  # path, pool/volume or protocol://name; "" when the drive is empty


def vm_ref(dom: libvirt.virDomain) -> VMRef:
    return VMRef(dom.UUIDString(), dom.name(), state(dom))


def state(dom: libvirt.virDomain) -> str:
    return STATES.get(dom.state()[0], "unknown")


def disk_specs(xml: str) -> list[DiskSpec]:
    specs = []
    for disk in ET.fromstring(xml).iterfind("devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue  # cdrom, floppy, lun: not the VM's data
        target = disk.find("target")
        if target is None or not target.get("dev"):
            raise ProviderError("provider kvm: a disk in the domain XML has no target")
        driver = disk.find("driver")
        fmt = driver.get("type", "raw") if driver is not None else "raw"
        specs.append(DiskSpec(target.get("dev", ""), disk.get("type", "file"), fmt, _source(disk)))
    return specs


def _source(disk: ET.Element) -> str:
    src = disk.find("source")
    if src is None:
        return ""
    kind = disk.get("type", "file")
    if kind == "file":
        return src.get("file", "")
    if kind == "block":
        return src.get("dev", "")
    if kind == "volume":
        return f"{src.get('pool', '')}/{src.get('volume', '')}"
    if kind == "network":
        host = src.find("host")
        where = ""
        if host is not None:
            where = f"{host.get('name', '')}:{host.get('port')}" if host.get("port") else host.get("name", "")
            where += f"?socket={host.get('socket')}" if host.get("socket") else ""
        return f"{src.get('protocol', '')}://{where}/{src.get('name', '')}"
    return ""


def describe(conn: libvirt.virConnect, dom: libvirt.virDomain) -> VMDescription:
    """The VM's disks and its persistent XML (never with secrets: no VIR_DOMAIN_XML_SECURE)."""
    with libvirt_errors(f"describing VM {dom.name()}"):
        live_xml = dom.XMLDesc(0)
        stored_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if dom.isPersistent() else live_xml
        disks = tuple(_disk_info(conn, dom, spec) for spec in disk_specs(live_xml) if spec.source)
        _state, _max_memory, memory_kib, vcpus, _cpu_time = dom.info()
    summary: dict[str, str | int | float | bool | None] = {
        "state": state(dom),
        "vcpus": vcpus,
        "memory_kib": memory_kib,
        "uri": redact_url(conn.getURI()),  # kept in every manifest: never with a password
    } | firmware_of(stored_xml).summary()
    return VMDescription(dom.UUIDString(), dom.name(), disks, stored_xml.encode(), "libvirt-domain-xml", summary)


def _disk_info(conn: libvirt.virConnect, dom: libvirt.virDomain, spec: DiskSpec) -> DiskInfo:
    path = spec.source
    if spec.disk_type == "volume":
        pool, _, volume = spec.source.partition("/")
        with libvirt_errors(f"disk {spec.target}: volume {spec.source}"):
            path = conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).path()
    with libvirt_errors(f"disk {spec.target}: reading its size"):
        capacity = dom.blockInfo(spec.target)[0]
    kind = _storage_kind(spec, path)
    details = {"target": spec.target, "disk_type": spec.disk_type, "source": spec.source}
    if kind == "lvm-thin":
        details.update(_thin_lv(path) or {})
    return DiskInfo(spec.target, capacity, kind, spec.format, path, details)


def _storage_kind(spec: DiskSpec, path: str) -> StorageKind:
    if spec.disk_type == "network":
        return "network"
    if spec.disk_type == "block" or path.startswith("/dev/"):
        return "lvm-thin" if _thin_lv(path) else "block"
    if spec.format == "qcow2":
        return "qcow2-file"
    if spec.format == "raw":
        return "raw-file"
    return "other"


def _thin_lv(path: str) -> dict[str, str] | None:
    """The LV's volume group, name and pool when ``path`` is a thin LV (per ``lvs``); else None."""
    if not path.startswith("/dev/") or not shutil.which("lvs"):
        return None
    try:
        vg, lv = split_lv_path(path)
        found = lookup_thin_lv(vg, lv)
    except (ValueError, ProviderError):
        return None
    if found is None or found.thin_id is None:
        return None
    return {DETAIL_VG: vg, DETAIL_LV: lv, "lvm_pool": found.pool}
