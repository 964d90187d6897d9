"""The ``kvm`` provider: VMs of one libvirt connection.

Options (``providerOptions``): :class:`genievm_kvm.options.KVMOptions` (``uri``, ``mode``,
``readOnly``, ``runDir``, ``nbdHost``, ``nbdPort``, ``nbdTls``, ``tlsDir``, ``sshPasswordFile``,
``scratchDir``, ...), checked when it connects.

A running or paused VM is backed up through libvirt's backup API (``mode`` auto or
backup-api), or through an internal qcow2 snapshot where the backup API is missing
(auto) or when asked (internal-snapshot). A stopped VM's disks are read with qemu-nbd.

Over a remote URI (``qemu+ssh://``) the backup job serves NBD over TCP on the remote host,
with TLS by default (``live.py``); a stopped VM's images and a restore's new ones are served
by ``qemu-nbd`` on that host, through an SSH-forwarded socket (``remote.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import libvirt

from genievm_core.engine.cbt_choice import choose_cbt_source
from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger, redact_url
from genievm_core.models.vm import DiskInfo, VMDescription, VMRef
from genievm_core.plugin.options import parse_options
from genievm_core.plugin.protocols import BackupRequest, RestoreRequest
from genievm_kvm.cbt import CBT_SOURCES
from genievm_kvm.chain import RUNNING
from genievm_kvm.connection import connect, find_domain, libvirt_errors
from genievm_kvm.domain import describe, state, vm_ref
from genievm_kvm.firmware import firmware_of, read_vm_files
from genievm_kvm.live import job_place, live_backup, run_dir
from genievm_kvm.offline import offline_backup
from genievm_kvm.options import KVMOptions
from genievm_kvm.remote import Askpass, Host, host_for, ssh_password
from genievm_kvm.snapshot import snapshot_backup
from genievm_kvm.source import Session

if TYPE_CHECKING:  # imported by a restore only: the translators and the image sink (about 13 ms)
    from genievm_kvm.restore import KVMRestore

__all__ = ["CBT_SOURCES", "KVMProvider", "job_place", "run_dir"]

log = get_logger("genievm.kvm")


class KVMProvider:
    name = "kvm"
    options_model = KVMOptions

    def __init__(self, options: Mapping[str, Any]) -> None:
        checked = parse_options(KVMOptions, options, "providerOptions")
        self.options = checked
        self.uri = checked.uri
        self.mode = checked.mode
        self.place = job_place(self.uri, checked)
        password = ssh_password(checked.ssh_password_file)
        remote = self.place.remote_host is not None
        self.askpass = Askpass(password, self.place.run_dir) if password is not None and remote else None
        try:
            self.conn = connect(self.uri, read_only=checked.read_only, askpass=self.askpass)
        except BaseException:
            self._close_askpass()
            raise

    def _host(self) -> Host:
        """Where the VMs' images are: this host, or the URI's over SSH."""
        return host_for(self.uri, self.place.run_dir, self.askpass)

    def list_vms(self) -> list[VMRef]:
        with libvirt_errors(f"listing VMs of {redact_url(self.uri)}"):
            return sorted((vm_ref(d) for d in self.conn.listAllDomains()), key=lambda r: r.name)

    def describe_vm(self, vm_id: str) -> VMDescription:
        """The VM, with the CBT source the core would choose among this plugin's for each disk (in ``details``
        and the summary); a backup records the one it did choose in each disk's ``cbt.source``."""
        vm = describe(self.conn, find_domain(self.conn, vm_id))
        vm_state = str(vm.summary["state"])
        where = {"vm_state": vm_state, "uri": self.uri, "vm_uuid": vm.id}  # cbt.py connects with it
        disks = tuple(_with_cbt_source(replace(d, details={**d.details, **where})) for d in vm.disks)
        summary = vm.summary | {f"cbt_source.{d.name}": d.details["cbt_source"] for d in disks}
        return replace(vm, disks=disks, summary=summary)

    def open_backup(self, vm: VMDescription, request: BackupRequest) -> AbstractContextManager[Session]:
        return self._backup(vm, request)

    @contextmanager
    def _backup(self, vm: VMDescription, request: BackupRequest) -> Iterator[Session]:
        dom = find_domain(self.conn, vm.id)
        vm_state = state(dom)
        if vm_state in RUNNING:
            use_api = self.mode == "backup-api" or (self.mode == "auto" and _has_backup_api(self.conn))
            if self.mode == "backup-api" and not _has_backup_api(self.conn):
                raise ProviderError(
                    f"provider kvm: libvirt at {redact_url(self.uri)} has no backup API (mode backup-api)"
                )
            if not use_api:
                self._local_only(f"backing up running VM {vm.name} without libvirt's backup API")
            how = (
                live_backup(dom, vm, request, self.place)
                if use_api
                else snapshot_backup(dom, vm, request, self.place.run_dir)
            )
            log.info("kvm.backup_path", vm=vm.name, state=vm_state, path="backup-api" if use_api else "snapshot")
        elif vm_state == "stopped":
            if request.quiesce:
                raise ProviderError(f"provider kvm: VM {vm.name} is stopped; --quiesce needs a running guest agent")
            with libvirt_errors(f"VM {vm.name}: listing checkpoints"):
                checkpoints = {c.getName() for c in dom.listAllCheckpoints()}
            how = offline_backup(dom, vm, request, self._host(), checkpoints)
            log.info("kvm.backup_path", vm=vm.name, state=vm_state, path="qemu-nbd")
        else:
            raise ProviderError(
                f"provider kvm: VM {vm.name} is {vm_state}; it can be backed up running, paused or stopped"
            )
        with how as session:
            session.offer(CBT_SOURCES)  # answered from this backup's exports when the core chooses them
            session.files = self._firmware_files(dom, vm)
            yield session

    def open_restore(self, vm: VMDescription, request: RestoreRequest) -> AbstractContextManager[KVMRestore]:
        return self._restore(vm, request)

    @contextmanager
    def _restore(self, vm: VMDescription, request: RestoreRequest) -> Iterator[KVMRestore]:
        from genievm_kvm.restore import KVMRestore

        session = KVMRestore(self.conn, vm, request, self._host(), self.options)
        try:
            yield session
        except BaseException:
            session.discard()
            raise

    def _firmware_files(self, dom: libvirt.virDomain, vm: VMDescription) -> dict[str, bytes]:
        """The NVRAM and swtpm state, read from this host's files: a remote host's are out of reach."""
        firmware = firmware_of(vm.config.decode())
        if self.place.remote_host:
            if firmware.nvram or firmware.tpm_emulator:
                log.warning(
                    "kvm.firmware_not_kept", vm=vm.name, reason="NVRAM and TPM state are files of the remote host"
                )
            return {}
        with libvirt_errors(f"VM {vm.name}: reading its XML"):
            xml = dom.XMLDesc(0)
        return read_vm_files(xml, vm.id, vm.name)

    def _local_only(self, what: str) -> None:
        if self.place.remote_host:
            raise ProviderError(
                f"provider kvm: {what} reads or writes disk files directly, which a remote connection "
                f"({redact_url(self.uri)}) cannot: run GenieVM on that host"
            )

    def power_on(self, vm_id: str) -> None:
        dom = find_domain(self.conn, vm_id)
        with libvirt_errors(f"starting VM {dom.name()}"):
            dom.create()

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass
        finally:
            self._close_askpass()

    def _close_askpass(self) -> None:
        if self.askpass is not None:
            self.askpass.close()
            self.askpass = None


def _with_cbt_source(disk: DiskInfo) -> DiskInfo:
    """The disk, noting which of this plugin's CBT sources the core's rule picks for it."""
    source = choose_cbt_source(disk, CBT_SOURCES)
    return replace(disk, details={**disk.details, "cbt_source": source.name if source else "hash-compare"})


def _has_backup_api(conn: libvirt.virConnect) -> bool:
    return hasattr(libvirt.virDomain, "backupBegin") and conn.getLibVersion() >= 6_000_000
