"""``genievm verify --boot``: the verifier ``boot``, which proves that a backup boots.

The backup's disks are served read-only by an export (``export.py``, in a thread of this process), each
under a qcow2 overlay in a temporary folder, so nothing is copied and nothing is written to the
repository; a throwaway VM without network boots from them (``boot_vm.py``) and must show a heartbeat
within the timeout. Then the VM, the export and the folder go, whatever happened. A backup that does
not boot is a problem in the report, with the reason (and, when its first disk's first sector has no
boot signature, that); a check that cannot run (no libvirt, no nbdkit) is an error.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genievm_kvm.firmware import NVRAM_FILE

from genievm_core.errors import ConfigError, GenieVMError, JobCancelledError, ProviderError, TranslationError
from genievm_core.jobs.vm_files import stored_files
from genievm_core.logging import get_logger
from genievm_core.models.manifest import BackupManifest
from genievm_core.plugin.protocols import Problem, RepositoryReader, VerifyReport
from genievm_core.repository import Repository
from genievm_recovery.export import START_TIMEOUT, Export, ServeJob

if TYPE_CHECKING:
    from genievm_core.translate import PortableVM
    from genievm_recovery.boot_vm import BootResult

__all__ = ["DEFAULT_PATTERN", "BootOptions", "BootVerifier"]

DEFAULT_PATTERN = r"login:"
log = get_logger("genievm.boot")
ZERO_ID = bytes(32)


@dataclass(frozen=True)
class BootOptions:
    """What ``verify --boot`` passes (``--boot-timeout``, ``--boot-pattern``, ``--boot-accel``, ...)."""

    timeout: float = 120.0
    pattern: str = DEFAULT_PATTERN
    accel: str = "auto"
    uri: str = "qemu:///system"
    screenshots: Path | None = None  # where each backup's screenshot is saved, <backup id>.png
    passphrase: str | None = None
    storage_options: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> BootOptions:
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"invalid configuration: boot check: unknown option {unknown[0]}")
        made = cls(**options)
        try:
            re.compile(made.pattern)
        except re.error as exc:
            raise ConfigError(f"invalid configuration: --boot-pattern: {made.pattern!r} is not a regular "
                              f"expression ({exc})") from exc  # fmt: skip
        if made.accel not in ("auto", "kvm", "tcg"):
            raise ConfigError(f"invalid configuration: --boot-accel: {made.accel!r} is not auto, kvm or tcg")
        return made


class BootVerifier:
    name = "boot"

    def verify(self, repository: RepositoryReader, manifest: BackupManifest) -> VerifyReport:
        return self.verify_with(repository, manifest, {})

    def verify_with(
        self, repository: RepositoryReader, manifest: BackupManifest, options: Mapping[str, Any]
    ) -> VerifyReport:
        from genievm_recovery.boot_vm import BootVM, boot_and_wait  # libvirt: only for a boot check

        opts = BootOptions.of(options)
        if not isinstance(repository, Repository):
            raise ProviderError("boot check: needs the repository itself (an export reads it), not a reader")
        disks = [d.name for d in manifest.disks]
        vm = _vm(manifest, disks)
        folder = Path(tempfile.mkdtemp(prefix="genievm-boot-"))
        try:
            export = Export(
                url=repository.url,
                backup=manifest,
                disks=disks,
                folder=folder / "export",
                passphrase=opts.passphrase,
                storage_options=dict(opts.storage_options or {}) or None,
            )
            with _serving(repository, export) as uris:
                overlays = {d: (_overlay(folder / f"{d}.qcow2", uri), uri) for d, uri in zip(disks, uris, strict=True)}
                boot = BootVM(vm, {d.name: overlays[d.name] for d in vm.disks}, folder, opts.accel,
                              efi_vars(manifest, vm))  # fmt: skip
                result = boot_and_wait(boot, opts.uri, opts.pattern, opts.timeout)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return _report(repository, manifest, vm, opts, result)


def efi_vars(manifest: BackupManifest, vm: PortableVM) -> bytes | None:
    """A KVM backup's NVRAM, for an EFI VM (a vSphere ``.nvram`` is not in OVMF's format); checked against its
    checksum in the manifest."""
    if vm.firmware != "efi" or manifest.vm.config_format != "libvirt-domain-xml":
        return None
    return stored_files(manifest).get(NVRAM_FILE)


def _vm(manifest: BackupManifest, disks: list[str]) -> PortableVM:
    from genievm_core.translate import read_config  # the translators: 9 ms, for a boot check only
    from genievm_recovery.boot_vm import plain_vm

    config = base64.b64decode(manifest.vm.config) if manifest.vm.config else b""
    if not config:
        return plain_vm(manifest.vm.name, disks)
    try:
        return read_config(manifest.vm.config_format or "", config, manifest.vm.summary)
    except TranslationError as exc:
        log.info("boot.plain_vm", backup=manifest.backup_id, reason=str(exc))
        return plain_vm(manifest.vm.name, disks)


@contextmanager
def _serving(repository: Repository, export: Export) -> Iterator[list[str]]:
    """The export, served by a ServeJob in a thread until the block ends."""
    ready = threading.Event()
    failed: list[BaseException] = []
    job = ServeJob(repository, export, on_ready=lambda _export: ready.set())

    def serve() -> None:
        try:
            job.execute()
        except JobCancelledError:
            pass
        except BaseException as exc:  # handed to the verifier's thread
            failed.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=serve, name="genievm-boot-export", daemon=True)
    thread.start()
    try:
        ready.wait(START_TIMEOUT + 10)
        if failed:
            raise failed[0]
        yield export.uris()
    finally:
        job.control.cancel()
        thread.join(60)


def _overlay(path: Path, uri: str) -> Path:
    done = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", uri, str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise ProviderError(f"boot check: cannot make an overlay on {uri}: {done.stderr.strip() or 'qemu-img failed'}")
    return path


def _report(repository: Repository, manifest: BackupManifest, vm: PortableVM, opts: BootOptions,
            result: BootResult) -> VerifyReport:  # fmt: skip
    details: dict[str, Any] = {"heartbeat": result.heartbeat, "seconds": round(result.seconds, 1),
                               "state": result.state, "console": result.console_tail, "screenshot": None}  # fmt: skip
    if result.screenshot is not None and opts.screenshots is not None:
        opts.screenshots.mkdir(parents=True, exist_ok=True)
        shot = opts.screenshots / f"{manifest.backup_id}.png"
        shot.write_bytes(result.screenshot)
        details["screenshot"] = str(shot)
    problems = []
    if result.heartbeat is None:
        if result.state == "running":
            why = f"no heartbeat within {opts.timeout:g} s (pattern {opts.pattern!r} on the serial console, " \
                  "or the guest agent)"  # fmt: skip
        else:
            why = f"the VM {result.state} before a heartbeat"
        boot_disk = vm.disks[0].name if vm.disks else None
        if boot_disk is not None and not _has_boot_signature(repository, manifest, boot_disk):
            why += f"; disk {boot_disk}: its first sector has no boot signature (zeroed, or not a boot disk)"
        if result.console_tail:
            why += f"; the console's last line: {result.console_tail!r}"
        problems.append(Problem(boot_disk, f"does not boot: {why}"))
    return VerifyReport("boot", manifest.backup_id, len(manifest.disks), problems, details)


def _has_boot_signature(repository: Repository, manifest: BackupManifest, disk: str) -> bool:
    """Whether the disk's first sector ends in 55 AA, as an MBR (or GPT's protective MBR) does."""
    record = next(d for d in manifest.disks if d.name == disk)
    try:
        first = next(iter(repository.disk_index(record)), ZERO_ID)
        sector = b"" if first == ZERO_ID else repository.get_chunk(first)[:512]
    except GenieVMError:
        return True  # the other verifiers report a damaged index or chunk
    return sector[510:512] == b"\x55\xaa"
