"""The throwaway VM of a boot check: a transient libvirt domain on qcow2 overlays of the export, with no network.

Its configuration comes from the backup's own (``genievm_core.translate``: CPUs, memory capped, BIOS or EFI),
its disks on SATA (every guest has an AHCI driver), the first serial port written to a file and the QEMU
guest agent's channel. It is started with ``VIR_DOMAIN_START_AUTODESTROY``: libvirt destroys it when the
connection closes, whatever happens to this process. A heartbeat is a line of the serial console that
matches the pattern, or the guest agent answering ``guest-ping``.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import libvirt
import libvirt_qemu

from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger
from genievm_core.translate import LibvirtTarget, PortableDisk, PortableVM, libvirt_domain

__all__ = ["BootResult", "BootVM", "boot_and_wait", "png_from_ppm"]

log = get_logger("genievm.boot")
MAX_MEMORY_MIB = 2048
AGENT_PING = '{"execute": "guest-ping"}'


@dataclass(frozen=True)
class BootVM:
    """What to boot: the backup's VM (or a plain BIOS one) on these overlays, one per disk in boot order."""

    vm: PortableVM
    overlays: dict[str, tuple[Path, str]]  # the backup's disk name → (overlay, the NBD URI behind it)
    folder: Path  # the console log and EFI variables go here
    accel: str = "auto"  # kvm, tcg, or auto (kvm where /dev/kvm exists)
    efi_vars: bytes | None = None  # the backup's EFI variables (a KVM VM's NVRAM); None: OVMF's template


@dataclass(frozen=True)
class BootResult:
    heartbeat: str | None  # the console line or agent answer that proved the boot, or None
    seconds: float
    state: str  # running, or what the VM did instead (shut off, crashed, paused)
    console_tail: str  # the console's last non-empty line
    screenshot: bytes | None  # PNG


def plain_vm(name: str, disks: Sequence[str]) -> PortableVM:
    """A VM for a backup without a configuration this can read (an image backup): BIOS, 1 CPU, 512 MiB."""
    return PortableVM("image", name, 1, 1, 512, "bios", False, "other", tuple(PortableDisk(d, "") for d in disks), ())


def domain_xml(boot: BootVM, name: str) -> str:
    vm = boot.vm
    memory = min(max(vm.memory_mib, 256), MAX_MEMORY_MIB)
    kind = "qemu" if boot.accel == "tcg" or (boot.accel == "auto" and not os.path.exists("/dev/kvm")) else "kvm"
    made = libvirt_domain(
        PortableVM(vm.source, vm.name, vm.cpus, vm.cores_per_socket, memory, vm.firmware, vm.secure_boot,
                   vm.os_family, vm.disks, ()),  # fmt: skip
        list(boot.overlays),
        LibvirtTarget(name=name, domain_type=kind, disk_bus="sata", no_nics=True),
    )
    root = ET.fromstring(made.xml)
    description = root.find("description")
    if description is not None:
        description.text = f"GenieVM boot check of a {vm.source} backup of {vm.name} (throwaway)"
    nvram = root.find("os/nvram")
    if nvram is not None:
        nvram.text = str(boot.folder / "VARS.fd")  # with the check's folder, not libvirt's
    devices = root.find("devices")
    assert devices is not None
    targets = {target: disk for disk, target in made.targets.items()}
    for disk in devices.iterfind("disk"):
        target = disk.find("target")
        overlay, uri = boot.overlays[targets[target.get("dev", "") if target is not None else ""]]
        driver = disk.find("driver")
        if driver is not None:
            driver.set("type", "qcow2")
        disk.insert(1, ET.Element("source", file=str(overlay)))
        backing = ET.Element("backingStore", type="network")
        ET.SubElement(backing, "format", type="raw")
        export, _, query = uri.removeprefix("nbd+unix:///").partition("?socket=")
        source = ET.SubElement(backing, "source", protocol="nbd", name=export)
        ET.SubElement(source, "host", transport="unix", socket=query)
        disk.insert(2, backing)
    for tag in ("serial", "console"):
        for el in devices.findall(tag):
            devices.remove(el)
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(boot.folder / "console.log"))
    ET.SubElement(serial, "target", port="0")
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    return ET.tostring(root, encoding="unicode")


def place_efi_vars(boot: BootVM) -> None:
    """An EFI VM starts from the backup's variables (its boot entries) where the backup has them: libvirt
    copies OVMF's template only to an NVRAM file that does not exist."""
    if boot.vm.firmware == "efi" and boot.efi_vars is not None:
        (boot.folder / "VARS.fd").write_bytes(boot.efi_vars)


def boot_and_wait(boot: BootVM, uri: str, pattern: str, timeout: float) -> BootResult:
    """Boot, wait for a heartbeat or ``timeout`` seconds, take a screenshot, destroy: nothing is left."""
    name = f"genievm-boot-{secrets.token_hex(4)}"
    heartbeat = re.compile(pattern)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise ProviderError(f"boot check: cannot connect to libvirt at {uri}: {exc.get_error_message()}") from exc
    try:
        place_efi_vars(boot)
        try:
            dom = conn.createXML(domain_xml(boot, name), libvirt.VIR_DOMAIN_START_AUTODESTROY)
        except libvirt.libvirtError as exc:
            raise ProviderError(f"boot check: cannot start the VM: {exc.get_error_message()}") from exc
        log.info("boot.started", vm=name, backup_vm=boot.vm.name)
        started = time.monotonic()
        try:
            found, state = _wait(dom, boot.folder / "console.log", heartbeat, started + timeout)
            seconds = time.monotonic() - started
            shot = _screenshot(conn, dom) if state == "running" else None
        finally:
            _destroy(dom)
        log.info("boot.done", vm=name, heartbeat=found, state=state, seconds=round(seconds, 1))
        return BootResult(found, seconds, state, _last_line(boot.folder / "console.log"), shot)
    finally:
        conn.close()


_STATES = {libvirt.VIR_DOMAIN_SHUTOFF: "shut off", libvirt.VIR_DOMAIN_CRASHED: "crashed",
           libvirt.VIR_DOMAIN_PAUSED: "paused (an emulation or I/O error; try --boot-accel tcg)",
           libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down"}  # fmt: skip


def _wait(dom: libvirt.virDomain, console: Path, pattern: re.Pattern[str], deadline: float) -> tuple[str | None, str]:
    next_ping = 0.0
    while True:
        for line in _lines(console):
            if pattern.search(line):
                return line.strip(), "running"
        try:
            code = dom.state()[0]
        except libvirt.libvirtError:
            return None, "gone"
        if code != libvirt.VIR_DOMAIN_RUNNING:
            return None, _STATES.get(code, f"state {code}")
        if time.monotonic() >= next_ping:
            next_ping = time.monotonic() + 3
            if _agent_answers(dom):
                return "the guest agent answered guest-ping", "running"
        if time.monotonic() >= deadline:
            return None, "running"
        time.sleep(0.5)


def _agent_answers(dom: libvirt.virDomain) -> bool:
    try:
        libvirt_qemu.qemuAgentCommand(dom, AGENT_PING, 1, 0)
    except libvirt.libvirtError:
        return False
    return True


def _lines(console: Path) -> list[str]:
    try:
        return console.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _last_line(console: Path) -> str:
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1bc", "", "\n".join(_lines(console)))  # terminal escapes
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _screenshot(conn: libvirt.virConnect, dom: libvirt.virDomain) -> bytes | None:
    """The first screen as PNG (newer QEMUs give PNG, older ones PPM), or None when QEMU cannot take one."""
    try:
        stream = conn.newStream(0)
        mime = dom.screenshot(stream, 0)
        parts = []
        while chunk := stream.recv(1 << 18):
            if not isinstance(chunk, bytes):  # -2: would block (never on a blocking stream)
                break
            parts.append(chunk)
        stream.finish()
    except libvirt.libvirtError as exc:
        log.warning("boot.no_screenshot", error=exc.get_error_message())
        return None
    image = b"".join(parts)
    if mime == "image/png":
        return image
    try:
        return png_from_ppm(image)
    except ValueError as exc:
        log.warning("boot.no_screenshot", error=str(exc))
        return None


def _destroy(dom: libvirt.virDomain) -> None:
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            log.warning("boot.destroy_failed", error=exc.get_error_message())


def png_from_ppm(ppm: bytes) -> bytes:
    """A binary PPM (P6, 8 bits) as PNG: the PNG chunks written here, no imaging library needed."""
    fields = re.match(rb"P6\s+(?:#[^\n]*\n\s*)*(\d+)\s+(\d+)\s+(\d+)\s", ppm)
    if fields is None or int(fields[3]) != 255:
        raise ValueError("the screenshot is not an 8-bit binary PPM")
    width, height = int(fields[1]), int(fields[2])
    pixels = ppm[fields.end() : fields.end() + width * height * 3]
    if len(pixels) != width * height * 3:
        raise ValueError("the screenshot is truncated")
    rows = b"".join(b"\0" + pixels[y * width * 3 : (y + 1) * width * 3] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")
