"""A VM's firmware state besides its disks: the UEFI NVRAM file and the vTPM's swtpm state.

The domain XML (kept as the VM's configuration) names the loader and the NVRAM file
(``<os><loader>``, ``<os><nvram>``); libvirt keeps an emulated TPM's state in
``/var/lib/libvirt/swtpm/<uuid>``. A backup keeps the NVRAM file's bytes as the VM file
``nvram`` and the swtpm folder as the tar ``swtpm.tar``; a restore writes the NVRAM where the
restored domain points (beside its disks) and places the swtpm state under the new VM's UUID.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from genievm_core.errors import CorruptionError, ProviderError, RestoreTargetExistsError
from genievm_core.logging import get_logger

__all__ = ["NVRAM_FILE", "SWTPM_FILE", "Firmware", "firmware_of", "place_swtpm_state", "read_vm_files"]

log = get_logger("genievm.kvm.firmware")

NVRAM_FILE = "nvram"
SWTPM_FILE = "swtpm.tar"
SWTPM_STATE = Path("/var/lib/libvirt/swtpm")  # libvirt's swtpm folders, one per domain UUID


@dataclass(frozen=True)
class Firmware:
    """What a domain's XML says of its firmware: the loader, the NVRAM file, an emulated TPM."""

    loader: str | None
    nvram: str | None
    tpm_emulator: bool

    def summary(self) -> dict[str, str | int | float | bool | None]:
        return {"firmware_loader": self.loader, "firmware_nvram": self.nvram, "tpm_emulator": self.tpm_emulator}


def firmware_of(xml: str | ET.Element) -> Firmware:
    root = ET.fromstring(xml) if isinstance(xml, str) else xml
    loader, nvram = root.find("os/loader"), root.find("os/nvram")
    emulated = any(b.get("type") == "emulator" for b in root.iterfind("devices/tpm/backend"))
    return Firmware(
        loader.text.strip() if loader is not None and loader.text else None,
        nvram.text.strip() if nvram is not None and nvram.text else None,
        emulated,
    )


def read_vm_files(xml: str, uuid: str, vm: str, swtpm_state: Path = SWTPM_STATE) -> dict[str, bytes]:
    """The NVRAM file's bytes and the swtpm state as a tar, those that exist (a VM never started has none)."""
    firmware = firmware_of(xml)
    files: dict[str, bytes] = {}
    if firmware.nvram:
        try:
            files[NVRAM_FILE] = Path(firmware.nvram).read_bytes()
        except FileNotFoundError:
            log.warning("kvm.nvram_missing", vm=vm, path=firmware.nvram, reason="the VM has not been started yet")
        except OSError as exc:
            raise ProviderError(
                f"provider kvm: VM {vm}: cannot read its NVRAM {firmware.nvram}: {exc.strerror}"
            ) from exc
    folder = swtpm_state / uuid
    if firmware.tpm_emulator and folder.is_dir():
        files[SWTPM_FILE] = _tar(folder, vm)
    return files


def _tar(folder: Path, vm: str) -> bytes:
    buffer = io.BytesIO()
    try:
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(folder.rglob("*")):
                if path.is_symlink() or not (path.is_file() or path.is_dir()) or path.name.endswith(".lock"):
                    continue  # swtpm's lock file is the running swtpm's, not state
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    except OSError as exc:
        raise ProviderError(f"provider kvm: VM {vm}: cannot read its TPM state in {folder}: {exc.strerror}") from exc
    return buffer.getvalue()


def place_swtpm_state(data: bytes, uuid: str, vm: str, *, force: bool, swtpm_state: Path = SWTPM_STATE) -> Path:
    """Unpack a backed-up swtpm state as the state of the domain ``uuid``; libvirt gives swtpm its owner at start."""
    folder = swtpm_state / uuid
    if folder.exists():
        if not force:
            raise RestoreTargetExistsError(f"{folder} exists; pass --force to replace the TPM state of {vm}")
        shutil.rmtree(folder)
    partial = swtpm_state / f".{uuid}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, mode=0o711)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                _extract(tar, member, partial)
        os.replace(partial, folder)
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, tarfile.TarError):
            raise CorruptionError(f"the TPM state of {vm} in the backup is not a tar: {exc}") from exc
        raise ProviderError(f"provider kvm: VM {vm}: cannot write its TPM state in {folder}: {exc.strerror}") from exc
    return folder


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path) -> None:
    """One file or folder, only below ``into``: never a link, a device, an absolute path or ``..``."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
        raise CorruptionError(f"the TPM state in the backup holds {member.name!r}, which is not a state file")
    target = into.joinpath(*name.parts)
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        return
    source = tar.extractfile(member)
    assert source is not None  # a regular file
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with source, open(target, "xb") as out:
        shutil.copyfileobj(source, out)
    target.chmod(member.mode & 0o600 or 0o600)
