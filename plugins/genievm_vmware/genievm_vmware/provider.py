"""The ``vmware`` provider: VMs of one vCenter or ESXi host, through pyvmomi.

Options (``providerOptions``, or ``-o KEY=VALUE``)::

    {"host": "vcenter.example.com",     # or https://host:port/sdk
     "port": 443,
     "user": "backup@vsphere.local",    # or GENIEVM_VMWARE_USER
     "password": "...",                 # config file only; or GENIEVM_VMWARE_PASSWORD, passwordFile, a prompt
     "caFile": "/etc/ssl/vcenter.pem",  # trust this CA (default: the system's)
     "insecure": false,                 # skip TLS verification (logged)
     "transport": "auto",               # auto | https | vddk
     "vddkLibDir": "/opt/vmware-vix-disklib-distrib",  # or VDDK_LIBDIR
     "vddkMode": "nbdssl",
     "scratchDir": "/var/tmp",          # https restores stage each disk here (default: --target, or $TMPDIR)
     "keepAliveSeconds": 300,           # an API call this often while data moves (vCenter's idle timeout)
     # restore only:
     "datacenter": "DC0", "folder": "DC0/vm/restored", "resourcePool": "...", "cluster": "...",
     "esxHost": "...", "datastore": "LocalDS_0", "networkMap": "VM Network=Restore Net,..."}

A VM is found by name, inventory path (``DC0/vm/web1``), MoRef (``vm-42``) or
instance UUID; backups key it by its instance UUID.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from genievm_core.engine import DiskSources
from genievm_core.logging import get_logger
from genievm_core.models.vm import VMDescription, VMRef
from genievm_core.plugin.options import parse_options
from genievm_core.plugin.protocols import BackupRequest, RestoreRequest
from genievm_vmware.backup import snapshot_backup
from genievm_vmware.connection import (
    connect,
    disconnect,
    endpoint,
    session_cookie,
    ssl_context,
    vsphere_errors,
    wait,
)
from genievm_vmware.describe import describe
from genievm_vmware.inventory import datacenter_of, datacenter_path, find_vm, list_vms
from genievm_vmware.keepalive import session_kept_alive
from genievm_vmware.nvram import read_nvram
from genievm_vmware.options import VMwareOptions
from genievm_vmware.restore import VMwareRestore
from genievm_vmware.transport import DiskTransport
from genievm_vmware.transport.https import HTTPSTransport
from genievm_vmware.transport.select import choose_transport

__all__ = ["VMwareProvider"]

log = get_logger("genievm.vmware")


class VMwareProvider:
    name = "vmware"
    options_model = VMwareOptions

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.given = dict(options)
        self.options = parse_options(VMwareOptions, options, "providerOptions")  # before any snapshot is made
        self.endpoint = endpoint(self.options)
        self.si = connect(self.endpoint)

    def open_transport(self, scratch_dir: Path | None = None) -> DiskTransport:
        return choose_transport(self.options, self.endpoint, session_cookie(self.si), scratch_dir=scratch_dir)

    def file_transport(self) -> HTTPSTransport:
        """Small VM files (the NVRAM) always go through the datastore's ``/folder`` URLs, whatever moves the disks."""
        ep = self.endpoint
        return HTTPSTransport(host=ep.host, port=ep.port, cookie=session_cookie(self.si), context=ssl_context(ep))

    def list_vms(self) -> list[VMRef]:
        return list_vms(self.si)

    def describe_vm(self, vm_id: str) -> VMDescription:
        vm = find_vm(self.si, vm_id)
        with vsphere_errors(f"describing VM {vm_id}"):
            return describe(vm)

    def open_backup(self, vm: VMDescription, request: BackupRequest) -> AbstractContextManager[DiskSources]:
        return self._backup(vm, request)

    @contextmanager
    def _backup(self, desc: VMDescription, request: BackupRequest) -> Iterator[DiskSources]:
        vm = find_vm(self.si, desc.id)
        with snapshot_backup(vm, desc, request, self.open_transport) as session, self._kept_alive():
            http = self.file_transport()
            try:
                with vsphere_errors(f"VM {vm.name}: reading its datacenter"):
                    datacenter = datacenter_path(datacenter_of(vm))
                session.files = read_nvram(vm, datacenter, http)
            finally:
                http.close()
            yield session

    def open_restore(self, vm: VMDescription, request: RestoreRequest) -> AbstractContextManager[VMwareRestore]:
        return self._restore(vm, request)

    @contextmanager
    def _restore(self, desc: VMDescription, request: RestoreRequest) -> Iterator[VMwareRestore]:
        options = parse_options(VMwareOptions, {**self.given, **request.options}, "providerOptions")
        # https restores stage disks in scratchDir, else in --target (restorePath) when given
        session = VMwareRestore(
            self.si, desc, request, options, lambda: self.open_transport(request.restore_path), self.file_transport
        )
        try:
            with self._kept_alive():
                yield session
        except BaseException:
            session.discard()
            raise

    def _kept_alive(self) -> AbstractContextManager[None]:
        return session_kept_alive(self.si, self.options.keep_alive_seconds)

    def power_on(self, vm_id: str) -> None:
        vm = find_vm(self.si, vm_id)
        wait(vm.PowerOnVM_Task(), f"powering on VM {vm.name}")
        log.info("vmware.powered_on", vm=vm.name)

    def close(self) -> None:
        disconnect(self.si)
