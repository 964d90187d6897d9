"""A libvirt domain's XML (what the kvm provider stores, ``libvirt-domain-xml``) read as a ``PortableVM``."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from genievm_core.errors import TranslationError
from genievm_core.translate.portable import Firmware, OSFamily, PortableDisk, PortableNic, PortableVM

__all__ = ["CONFIG_FORMAT", "read_libvirt"]

CONFIG_FORMAT = "libvirt-domain-xml"
_UNITS = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
          "g": 1 << 30, "gib": 1 << 30, "gb": 10**9, "t": 1 << 40, "tib": 1 << 40, "tb": 10**12}  # fmt: skip
_LINUX = ("linux", "debian", "ubuntu", "fedora", "rhel", "centos", "opensuse", "sles", "alma", "rocky", "arch",
          "alpine", "gentoo", "mageia", "oraclelinux", "silverblue")  # fmt: skip
_LEFT_OUT = {
    "hostdev": "passthrough device {what}: a host's hardware, not carried over",
    "tpm": "vTPM: its state stays with the source host; the new VM has no TPM (BitLocker and the like will ask "
    "for their recovery keys)",
    "filesystem": "shared folder {what}: left out",
    "redirdev": "USB redirection: left out",
    "smartcard": "smartcard: left out",
}


def _int(text: str | None, what: str) -> int:
    try:
        return int(text or "")
    except ValueError as exc:
        raise TranslationError(f"cannot translate the libvirt domain: {what} is {text!r}") from exc


def _memory_mib(root: ET.Element) -> int:
    el = root.find("memory")
    if el is None:
        raise TranslationError("cannot translate the libvirt domain: it gives no memory size")
    unit = el.get("unit", "KiB").lower()
    if unit not in _UNITS:
        raise TranslationError(f"cannot translate the libvirt domain: memory unit {el.get('unit')!r}")
    return -(-_int(el.text, "memory") * _UNITS[unit] // (1 << 20))


def _firmware(os_el: ET.Element | None) -> tuple[Firmware, bool]:
    if os_el is None:
        return "bios", False
    loader = os_el.find("loader")
    efi = os_el.get("firmware") == "efi" or (loader is not None and loader.get("type") == "pflash")
    feature = os_el.find("firmware/feature[@name='secure-boot']")
    secure = (loader is not None and loader.get("secure") == "yes") or (
        feature is not None and feature.get("enabled") == "yes"
    )
    return ("efi" if efi else "bios"), efi and secure


def _os_family(root: ET.Element) -> OSFamily:
    ids = [el.get("id", "") for el in root.iter() if el.tag.endswith("}os") and el.get("id")]
    low = " ".join(ids).lower()
    if "microsoft.com/win" in low or "/win" in low:
        return "windows"
    return "linux" if any(word in low for word in _LINUX) else "other"


def _network(interface: ET.Element) -> str:
    source = interface.find("source")
    if source is None:
        return ""
    kind = interface.get("type", "")
    if kind == "network":
        return source.get("network", "")
    if kind == "bridge":
        return source.get("bridge", "")
    return source.get("dev", "")


def read_libvirt(config: bytes) -> PortableVM:
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise TranslationError(f"cannot translate the libvirt domain: it is not XML ({exc})") from exc
    os_el = root.find("os")
    type_el = os_el.find("type") if os_el is not None else None
    arch = type_el.get("arch", "x86_64") if type_el is not None else "x86_64"
    if arch not in ("x86_64", "i686"):
        raise TranslationError(f"cannot translate a {arch} VM: vSphere runs x86 guests only")
    firmware, secure = _firmware(os_el)
    vcpus = _int(root.findtext("vcpu", "1").strip(), "vcpu")
    topology = root.find("cpu/topology")
    cores = _int(topology.get("cores", "1"), "cpu/topology cores") if topology is not None else 1
    disks: list[tuple[int, int, PortableDisk]] = []
    nics: list[PortableNic] = []
    left_out: list[str] = []
    devices = root.find("devices")
    for position, device in enumerate(devices if devices is not None else []):
        if device.tag == "disk":
            target = device.find("target")
            if device.get("device", "disk") != "disk":
                left_out.append(f"{device.get('device')} {target.get('dev') if target is not None else ''}: left out")
                continue
            if target is None or not target.get("dev"):
                raise TranslationError("cannot translate the libvirt domain: a disk has no target")
            boot = device.find("boot")
            order = _int(boot.get("order"), "boot order") if boot is not None else 1 << 30
            disks.append((order, position, PortableDisk(target.get("dev", ""), target.get("bus", "virtio"))))
        elif device.tag == "interface":
            mac, model = device.find("mac"), device.find("model")
            label = f"interface {len(nics) + 1}"
            mac_text = mac.get("address", "") if mac is not None else ""
            model_text = model.get("type", "") if model is not None else ""
            nics.append(PortableNic(label, _network(device), mac_text, model_text))
        elif device.tag in _LEFT_OUT:
            what = device.get("type", "") or device.tag
            left_out.append(_LEFT_OUT[device.tag].format(what=what))
        elif device.tag == "channel" and device.find("target[@name='org.qemu.guest_agent.0']") is not None:
            left_out.append("QEMU guest agent: it does not talk to vSphere; install VMware Tools (open-vm-tools)")
    return PortableVM(
        source="kvm",
        name=root.findtext("name", "").strip(),
        cpus=vcpus,
        cores_per_socket=cores,
        memory_mib=_memory_mib(root),
        firmware=firmware,
        secure_boot=secure,
        os_family=_os_family(root),
        disks=tuple(d for _, _, d in sorted(disks, key=lambda t: (t[0], t[1]))),
        nics=tuple(nics),
        left_out=tuple(left_out),
    )
