"""A UEFI VM with a vTPM, booted with OVMF: its NVRAM and swtpm state are in the backup, byte for byte,
and the restored VM gets them (NVRAM where its XML points, TPM state under its new UUID) and starts.

The VM runs under TCG (domain type ``qemu``): OVMF under KVM stops with an emulation failure on this
machine. It runs only until OVMF has written its variables, then is paused, so the files hold still.
"""

from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import blake3
import libvirt
import pytest
from genievm_kvm.firmware import SWTPM_STATE
from genievm_kvm.restore import restored_domain_xml
from genievm_kvm.testing import scratch_domain_xml
from kvm_support import URI, create_images

OPT = ["--provider", "kvm", "-o", f"uri={URI}"]
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
PERMALL = "tpm2/tpm2-00.permall"


def _uefi_xml(name: str, images: dict[str, tuple[Path, str]], nvram: Path) -> str:
    root = ET.fromstring(scratch_domain_xml(name, images))
    root.set("type", "qemu")
    memory = root.find("memory")
    assert memory is not None
    memory.text = "256"  # OVMF needs more than the scratch VM's 64 MiB
    os_el = root.find("os")
    assert os_el is not None
    ET.SubElement(os_el, "loader", readonly="yes", type="pflash").text = str(OVMF_CODE)
    ET.SubElement(os_el, "nvram", template=str(OVMF_VARS)).text = str(nvram)
    devices = root.find("devices")
    assert devices is not None
    tpm = ET.SubElement(devices, "tpm", model="tpm-crb")
    ET.SubElement(tpm, "backend", type="emulator", version="2.0")
    return ET.tostring(root, encoding="unicode")


def _remove(dom: libvirt.virDomain) -> None:
    try:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise


@pytest.fixture
def uefi_vm(libvirt_conn: libvirt.virConnect, tmp_path: Path) -> Iterator[libvirt.virDomain]:
    """A UEFI VM with an emulated TPM 2.0, booted until OVMF has written its variables, then paused."""
    if not OVMF_CODE.exists():
        pytest.skip("OVMF is not installed (scripts/setup.sh installs ovmf)")
    name = f"genievm-uefi-{secrets.token_hex(3)}"
    nvram = tmp_path / f"{name}_VARS.fd"
    dom = libvirt_conn.defineXML(_uefi_xml(name, create_images(tmp_path, name, {"vda": (16 << 20, "qcow2")}), nvram))
    try:
        dom.create()
        template = OVMF_VARS.read_bytes()
        deadline = time.monotonic() + 600  # a wait for the firmware, not a measurement: OVMF takes seconds
        while (not nvram.exists() or nvram.read_bytes() == template) and time.monotonic() < deadline:
            time.sleep(0.5)
        dom.suspend()
        assert nvram.read_bytes() != template, "OVMF wrote no variable"
        yield dom
    finally:
        _remove(dom)


def test_nvram_and_tpm_state_backed_up_and_restored(uefi_vm, cli, repo, tmp_path, libvirt_conn):
    name, uuid = uefi_vm.name(), uefi_vm.UUIDString()
    nvram = tmp_path / f"{name}_VARS.fd"
    permall = (SWTPM_STATE / uuid / PERMALL).read_bytes()

    backup = cli("backup", "--vm", name, "--repo", repo, *OPT, "--json").json()
    shown = cli("backups", "show", backup["backup_id"], "--repo", repo, "--json").json()
    files = {f["name"]: f for f in shown["vm"]["files"]}
    assert sorted(files) == ["nvram", "swtpm.tar"]
    assert files["nvram"]["size"] == nvram.stat().st_size
    assert files["nvram"]["checksum"] == blake3.blake3(nvram.read_bytes()).hexdigest()  # byte-identical
    assert "data" not in files["nvram"]  # show leaves the contents out, as it does the configuration
    assert shown["vm"]["summary"]["firmware_loader"] == str(OVMF_CODE)
    assert shown["vm"]["summary"]["tpm_emulator"] is True

    new_name = f"{name}-r"
    target = tmp_path / "restored"
    in_the_way = target / f"{new_name}_VARS.fd"
    target.mkdir()
    in_the_way.write_bytes(b"another VM's")
    refused = cli("restore", "--vm", uuid, "--repo", repo, *OPT, "--target", str(target), "--new-name", new_name,
                  check=False)  # fmt: skip
    assert refused.code == 23
    assert refused.err.strip().splitlines() == [f"genievm: error: {in_the_way} exists; pass --force to overwrite it"]
    assert list(target.iterdir()) == [in_the_way]  # refused before any disk was written
    in_the_way.unlink()
    out = cli("restore", "--vm", uuid, "--repo", repo, *OPT, "--target", str(target), "--new-name", new_name,
              "--json").json()  # fmt: skip
    dom = libvirt_conn.lookupByName(new_name)
    try:
        new_uuid = dom.UUIDString()
        assert out["vm_id"] == new_uuid != uuid
        restored_nvram = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).findtext("os/nvram")
        assert restored_nvram == str(target / f"{new_name}_VARS.fd")  # beside its disks, not the source VM's file
        assert Path(restored_nvram).read_bytes() == nvram.read_bytes()
        assert (SWTPM_STATE / new_uuid / PERMALL).read_bytes() == permall
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)  # swtpm starts on the restored state
        assert dom.isActive()
        dom.destroy()

        Path(restored_nvram).write_bytes(OVMF_VARS.read_bytes())  # as if its variables were lost
        (SWTPM_STATE / new_uuid / PERMALL).write_bytes(b"lost")
        cli("restore", "--vm", uuid, "--repo", repo, *OPT, "--target", str(target), "--new-name", new_name, "--force")
        assert libvirt_conn.lookupByName(new_name).UUIDString() == new_uuid  # restored into, not made anew
        assert Path(restored_nvram).read_bytes() == nvram.read_bytes()  # where its XML points
        assert (SWTPM_STATE / new_uuid / PERMALL).read_bytes() == permall
    finally:
        _remove(dom)
    assert not (SWTPM_STATE / new_uuid).exists()


def test_a_restored_domain_never_points_at_the_source_vms_nvram(tmp_path):
    source = tmp_path / "source_VARS.fd"
    xml = _uefi_xml("src", {"vda": (tmp_path / "src-vda.qcow2", "qcow2")}, source)
    disks = {"vda": (tmp_path / "new-vda.qcow2", "qcow2")}
    fresh = ET.fromstring(restored_domain_xml(xml, "new", disks)).find("os/nvram")
    assert fresh is not None and fresh.text is None  # libvirt makes a new one from the template
    assert fresh.get("template") == str(OVMF_VARS)
    kept = ET.fromstring(restored_domain_xml(xml, "new", disks, nvram=tmp_path / "new_VARS.fd"))
    assert kept.findtext("os/nvram") == str(tmp_path / "new_VARS.fd")
