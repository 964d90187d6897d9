"""A vSphere VM's NVRAM file (``<name>.nvram`` beside its ``.vmx``: its EFI or BIOS variables, its boot order).

A backup keeps it as the VM file ``nvram``, read through the datastore's ``/folder`` URL; a restore
puts it where the restored VM's NVRAM goes, before the VM is first powered on.
"""

from __future__ import annotations

import re
from typing import Any

from pyVmomi import vim

from genievm_core.logging import get_logger
from genievm_vmware.connection import vsphere_errors
from genievm_vmware.transport.https import HTTPSTransport

__all__ = ["NVRAM_FILE", "nvram_location", "read_nvram", "write_nvram"]

log = get_logger("genievm.vmware.nvram")

NVRAM_FILE = "nvram"
_DATASTORE_PATH = re.compile(r"^\[(?P<datastore>[^\]]+)\] ?(?P<path>.*)$")


def nvram_location(vm: vim.VirtualMachine) -> tuple[str, str] | None:
    """(datastore, path) of the VM's NVRAM: the file vSphere lists as ``nvram``, else ``<name>.nvram`` beside the
    ``.vmx`` (where a VM not yet powered on gets it)."""
    with vsphere_errors(f"VM {vm.name}: reading its files"):
        layout: Any = vm.layoutEx
        config: Any = vm.config
        files = [f.name for f in (layout.file if layout is not None else []) if f.type == "nvram"]
        vmx = str(config.files.vmPathName or "") if config is not None else ""
        name = str(vm.name)
    where = _DATASTORE_PATH.match(files[0] if files else vmx)
    if where is None or not where["path"]:
        return None
    if files:
        return where["datastore"], where["path"]
    folder = where["path"].rpartition("/")[0]
    return where["datastore"], f"{folder}/{name}.nvram" if folder else f"{name}.nvram"


def read_nvram(vm: vim.VirtualMachine, datacenter: str, http: HTTPSTransport) -> dict[str, bytes]:
    """``{"nvram": bytes}``, or nothing when the VM has no NVRAM file (never powered on)."""
    where = nvram_location(vm)
    data = http.get_file(datacenter, *where) if where else None
    if data is None:
        log.info("vmware.nvram_missing", vm=vm.name, reason="the VM has no NVRAM file (never powered on)")
        return {}
    return {NVRAM_FILE: data}


def write_nvram(vm: vim.VirtualMachine, datacenter: str, http: HTTPSTransport, data: bytes) -> None:
    where = nvram_location(vm)
    if where is None:
        log.warning("vmware.nvram_not_restored", vm=vm.name, reason="the VM has no folder on a datastore")
        return
    http.put_file(datacenter, *where, data)
    log.info("vmware.nvram_restored", vm=vm.name, datastore=where[0], path=where[1], size=len(data))
