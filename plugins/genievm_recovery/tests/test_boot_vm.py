"""The boot check's throwaway VM, as data: its domain XML and the screenshot's PNG (no VM started here)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytest.importorskip("libvirt")

from genievm_recovery.boot_check import efi_vars  # noqa: E402
from genievm_recovery.boot_vm import BootVM, domain_xml, place_efi_vars, plain_vm, png_from_ppm  # noqa: E402

from genievm_core.errors import CorruptionError  # noqa: E402
from genievm_core.jobs.vm_files import session_files  # noqa: E402
from genievm_core.models.manifest import BackupManifest, VMRecord  # noqa: E402
from genievm_core.translate import PortableDisk, PortableNic, PortableVM  # noqa: E402


def test_the_vm_boots_from_overlays_on_the_export_without_network(tmp_path: Path) -> None:
    vm = PortableVM("vmware", "web01", 8, 2, 65536, "efi", False, "windows",
                    (PortableDisk("disk-2001", "scsi"), PortableDisk("disk-2000", "scsi")),
                    (PortableNic("Network adapter 1", "VM Network", "00:50:56:00:00:01", "vmxnet3"),))  # fmt: skip
    sock = tmp_path / "export" / "nbd.sock"
    overlays = {d.name: (tmp_path / f"{d.name}.qcow2", f"nbd+unix:///{d.name}?socket={sock}") for d in vm.disks}
    root = ET.fromstring(domain_xml(BootVM(vm, overlays, tmp_path, "tcg"), "genievm-boot-1"))
    assert root.get("type") == "qemu" and root.findtext("name") == "genievm-boot-1"
    assert root.findtext("memory") == "2048"  # capped
    assert root.find("devices/interface") is None
    assert root.findtext("os/nvram") == str(tmp_path / "VARS.fd")  # EFI variables with the check's files
    disks = root.findall("devices/disk")
    assert [d.find("source").get("file") for d in disks] == [str(tmp_path / "disk-2001.qcow2"),  # type: ignore[union-attr]
                                                             str(tmp_path / "disk-2000.qcow2")]  # fmt: skip
    assert [d.find("driver").get("type") for d in disks] == ["qcow2", "qcow2"]  # type: ignore[union-attr]
    assert [d.find("target").get("bus") for d in disks] == ["sata", "sata"]  # type: ignore[union-attr]
    backing = disks[0].find("backingStore")
    assert backing is not None and backing.get("type") == "network"
    assert backing.find("source").get("name") == "disk-2001"  # type: ignore[union-attr]
    assert backing.find("source/host").get("socket") == str(sock)  # type: ignore[union-attr]
    (serial,) = root.findall("devices/serial")
    assert serial.get("type") == "file" and serial.find("source").get("path") == str(tmp_path / "console.log")  # type: ignore[union-attr]
    assert root.find("devices/channel/target[@name='org.qemu.guest_agent.0']") is not None


def test_an_image_backup_boots_as_a_plain_bios_vm(tmp_path: Path) -> None:
    vm = plain_vm("vm1", ["vda"])
    root = ET.fromstring(domain_xml(BootVM(vm, {"vda": (tmp_path / "o", "nbd+unix:///vda?socket=/s")}, tmp_path),
                                    "b"))  # fmt: skip
    assert root.find("os/loader") is None and root.findtext("memory") == "512"


class FakeSession:
    """A test double of a backup session: only the VM files it offers (``session_files`` reads them)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def sources(self) -> dict[str, object]:
        return {}

    def vm_files(self) -> dict[str, bytes]:
        return self.files


def _manifest(config_format: str, files: dict[str, bytes]) -> BackupManifest:
    now = datetime.now(UTC)
    records = session_files(FakeSession(files), "kvm", "uefi1")  # type: ignore[arg-type]
    vm = VMRecord(id="uefi1", name="uefi1", provider="kvm", config_format=config_format, files=records)
    return BackupManifest(backup_id="20261207T000000.000000Z-0123abcd", repository_id="0" * 32, vm=vm,
                          kind="full", started_at=now, finished_at=now, disks=())  # fmt: skip


def test_an_efi_vm_boots_with_the_backups_variables(tmp_path: Path) -> None:
    """A KVM backup's NVRAM (its boot entries) is the check's VARS.fd; a vSphere .nvram or a BIOS VM gets none."""
    efi = PortableVM("kvm", "uefi1", 1, 1, 512, "efi", False, "linux", (PortableDisk("vda", "virtio"),), ())
    manifest = _manifest("libvirt-domain-xml", {"nvram": b"EFI variables", "swtpm.tar": b"tpm"})
    assert efi_vars(manifest, efi) == b"EFI variables"
    assert efi_vars(_manifest("vsphere-vmx+json", {"nvram": b"vmware"}), efi) is None
    assert efi_vars(manifest, plain_vm("uefi1", ["vda"])) is None
    place_efi_vars(BootVM(efi, {}, tmp_path, efi_vars=efi_vars(manifest, efi)))
    assert (tmp_path / "VARS.fd").read_bytes() == b"EFI variables"
    place_efi_vars(BootVM(plain_vm("b", ["vda"]), {}, tmp_path / "bios", efi_vars=b"x"))  # nothing written
    assert not (tmp_path / "bios").exists()
    damaged = manifest.model_copy(
        update={"vm": manifest.vm.model_copy(update={"files": (manifest.vm.files[0].model_copy(update={"size": 3}),)})}
    )
    with pytest.raises(CorruptionError, match="VM file nvram does not match its checksum"):
        efi_vars(damaged, efi)


def test_a_ppm_screenshot_becomes_a_png() -> None:
    pixels = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    png = png_from_ppm(b"P6\n# a comment\n2 2\n255\n" + pixels)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    ihdr = png[8 + 8 : 8 + 8 + 13]
    assert (int.from_bytes(ihdr[:4], "big"), int.from_bytes(ihdr[4:8], "big"), ihdr[8], ihdr[9]) == (2, 2, 8, 2)
    idat_at = png.index(b"IDAT")
    length = int.from_bytes(png[idat_at - 4 : idat_at], "big")
    assert zlib.decompress(png[idat_at + 4 : idat_at + 4 + length]) == b"\0" + pixels[:6] + b"\0" + pixels[6:]
    with pytest.raises(ValueError, match="truncated"):
        png_from_ppm(b"P6 2 2 255\n" + pixels[:-1])
