"""Restore: a new VM from the stored configuration, its disks written through the chosen transport.

The new VM gets the new name (or the old one), the placement the options give
(``placement.py``) and new thin disks of the stored capacities; then each disk's
data is written. A backup of another provider (kvm) gets a new VM whose configuration
is translated from the stored one (``genievm_core.translate``, ``crossspec.py``).
If anything fails the VM that was created is destroyed. A VM
that already has the name is never touched without ``--force``; with it, the
backup's disks are written into that VM's disks of the same device key, and the
VM must be powered off and have no snapshots.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyVmomi import vim

from genievm_core.errors import ConfigError, GenieVMError, ProviderError, RestoreTargetExistsError
from genievm_core.logging import get_logger
from genievm_core.models.config import DiskConfig
from genievm_core.models.vm import DiskInfo, VMDescription
from genievm_core.plugin.protocols import DiskSink, RestoreRequest
from genievm_core.translate import VSphereTarget, read_config, vsphere_spec
from genievm_vmware.connection import vsphere_errors, wait
from genievm_vmware.crossspec import translated_vm_spec
from genievm_vmware.describe import CONFIG_FORMAT, VMDisk, load_config, vm_disks
from genievm_vmware.inventory import datacenter_of, datacenter_path, lookup_vm
from genievm_vmware.nvram import NVRAM_FILE, write_nvram
from genievm_vmware.options import VMwareOptions
from genievm_vmware.placement import Placement, placement
from genievm_vmware.transport import DiskHandle, DiskLocation, DiskTransport
from genievm_vmware.transport.https import HTTPSTransport
from genievm_vmware.vmspec import DiskSlot, new_vm_spec, slot

__all__ = ["VMwareDiskSink", "VMwareRestore"]

log = get_logger("genievm.vmware.restore")


class VMwareDiskSink:
    def __init__(self, handle: DiskHandle, *, zeroed: bool) -> None:
        self._handle = handle
        self._zeroed = zeroed

    @property
    def zeroed(self) -> bool:
        return self._zeroed

    def write(self, offset: int, data: bytes) -> None:
        self._handle.write(offset, data)

    def read(self, offset: int, length: int) -> bytes:
        return self._handle.read(offset, length)

    def close(self) -> None:
        self._handle.close()

    def discard(self) -> None:
        drop = getattr(self._handle, "discard", None)
        (drop or self._handle.close)()


class VMwareRestore:
    def __init__(
        self,
        si: vim.ServiceInstance,
        desc: VMDescription,
        request: RestoreRequest,
        options: VMwareOptions,
        open_transport: Callable[[], DiskTransport],
        file_transport: Callable[[], HTTPSTransport] | None = None,
    ) -> None:
        if not desc.config:
            raise ProviderError(f"provider vmware: backup of {desc.name} holds no VM configuration")
        self.name = request.new_name or desc.name
        self.sinks: list[VMwareDiskSink] = []
        self.created: vim.VirtualMachine | None = None
        self.transport: DiskTransport | None = None
        self.open_transport = open_transport
        self.file_transport = file_transport
        # another hypervisor's NVRAM (OVMF's variables) is not vSphere's: a translated VM starts with none
        self.nvram = request.files.get(NVRAM_FILE) if desc.config_format == CONFIG_FORMAT else None
        restored = {d.name for d in desc.disks if not request.disk_configs.get(d.name, DiskConfig(name=d.name)).skip}
        sizes = {d.name: d.size for d in desc.disks}
        existing = lookup_vm(si, self.name)
        if desc.config_format != CONFIG_FORMAT:
            if existing is not None:
                raise RestoreTargetExistsError(
                    f"VM {self.name} exists; a backup of another provider is restored as a new VM (give --new-name)"
                )
            wanted = self._create_translated(si, desc, options, restored, sizes)
        elif existing is not None:
            self.vm = self._existing(existing, request, restored)
            self.zeroed = False
            wanted = _stored_slots(desc, load_config(desc.config), restored)
        else:
            wanted = self._create(si, desc, options, restored, sizes)
        try:
            self._match_disks(wanted, sizes)
        except BaseException:
            self.discard()
            raise

    def _create(
        self, si: vim.ServiceInstance, desc: VMDescription, options: VMwareOptions, restored: set[str],
        sizes: dict[str, int],
    ) -> dict[str, DiskSlot]:  # fmt: skip
        """A new VM from the stored vSphere configuration; where each restored disk goes on it."""
        config = load_config(desc.config)
        wanted = _stored_slots(desc, config, restored)
        stored = {d.name: d for d in vm_disks(list(config.hardware.device))}
        source_ds = next((stored[n].datastore for n in sorted(restored)), None)
        where = placement(si, options, source_ds)
        capacities = {stored[n].device.key: sizes[n] for n in restored}
        recorded = {k.split(".")[1]: str(v) for k, v in desc.summary.items() if k.endswith(".network") and v}
        self._create_vm(where, new_vm_spec(config, self.name, where, capacities, options, recorded))
        return wanted

    def _create_translated(
        self, si: vim.ServiceInstance, desc: VMDescription, options: VMwareOptions, restored: set[str],
        sizes: dict[str, int],
    ) -> dict[str, DiskSlot]:  # fmt: skip
        """A new VM for another provider's backup, its configuration translated (genievm_core.translate)."""
        target = VSphereTarget(
            scsi_controller=options.scsi_controller,
            network_map=options.network_map,
            default_network=options.default_network,
            no_nics=options.no_nics,
        )
        translated = vsphere_spec(read_config(desc.config_format, desc.config, desc.summary), sorted(restored), target)
        for warning in translated.warnings:
            log.warning("vmware.not_carried_over", vm=self.name, detail=warning)
        where = placement(si, options, None)
        spec, wanted = translated_vm_spec(translated, self.name, where, sizes)
        self._create_vm(where, spec)
        return wanted

    def _create_vm(self, where: Placement, spec: vim.vm.ConfigSpec) -> None:
        task = where.folder.CreateVM_Task(config=spec, pool=where.pool)
        self.vm = self.created = wait(task, f"creating VM {self.name}")
        log.info("vmware.vm_created", vm=self.name, moref=self.vm._moId, datastore=where.datastore.name)
        self.zeroed = True

    def _match_disks(self, wanted: dict[str, DiskSlot], sizes: dict[str, int]) -> None:
        with vsphere_errors(f"reading the disks of VM {self.name}"):
            vm_config: Any = self.vm.config
            devices = list(vm_config.hardware.device)
            by_slot = {slot(devices, d.device): d for d in vm_disks(devices)}
            self.datacenter = datacenter_path(datacenter_of(self.vm))
        self.targets: dict[str, VMDisk] = {}
        for name, where in wanted.items():
            target = by_slot.get(where)
            if target is None:
                raise ProviderError(f"provider vmware: VM {self.name} has no disk where {name} goes")
            if target.capacity < sizes[name]:
                raise ProviderError(
                    f"provider vmware: disk {target.name} of VM {self.name} is smaller than backed-up {name}"
                )
            self.targets[name] = target

    def _existing(self, vm: vim.VirtualMachine, request: RestoreRequest, restored: set[str]) -> vim.VirtualMachine:
        if not request.force:
            raise RestoreTargetExistsError(f"VM {self.name} exists; pass --force to restore its disks into it")
        with vsphere_errors(f"reading VM {self.name}"):
            state, snapshots = vm.runtime.powerState, vm.snapshot
        if state != "poweredOff":
            raise ProviderError(f"provider vmware: VM {self.name} is {state}; power it off to restore into it")
        if snapshots is not None:
            raise ProviderError(f"provider vmware: VM {self.name} has snapshots; remove them to restore into it")
        log.warning("vmware.restore_into_existing", vm=self.name, disks=sorted(restored))
        return vm

    def open_sink(self, disk: DiskInfo, config: DiskConfig) -> DiskSink:
        if config.target or config.format:
            raise ConfigError("invalid RestoreConfig: diskConfigs: target and format do not apply to vmware restores")
        if self.transport is None:
            self.transport = self.open_transport()
        target = self.targets[disk.name]
        where = DiskLocation(self.vm._moId, self.datacenter, target.datastore, target.path, target.capacity)
        zeroed = self.zeroed or self.transport.name == "https"  # https writes the whole file, zeros too
        sink = VMwareDiskSink(self.transport.open(where, writable=True), zeroed=zeroed)
        self.sinks.append(sink)
        return sink

    def commit(self) -> str:
        for sink in self.sinks:
            sink.close()
        self._close_transport()
        if self.nvram is not None and self.file_transport is not None:
            http = self.file_transport()
            try:
                write_nvram(self.vm, self.datacenter, http, self.nvram)
            finally:
                http.close()
        with vsphere_errors(f"reading VM {self.name}"):
            config: Any = self.vm.config
            return str(config.instanceUuid or self.vm._moId)

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def discard(self) -> None:
        for sink in self.sinks:
            try:
                sink.discard()
            except GenieVMError as exc:
                log.warning("vmware.sink_discard_failed", vm=self.name, error=str(exc))
        self._close_transport()
        if self.created is not None:
            try:
                wait(self.created.Destroy_Task(), f"removing the half-restored VM {self.name}")
                log.info("vmware.restore_undone", vm=self.name)
            except GenieVMError as exc:
                log.error("vmware.restore_not_undone", vm=self.name, error=str(exc))
            self.created = None


def _stored_slots(desc: VMDescription, config: vim.vm.ConfigInfo, restored: set[str]) -> dict[str, DiskSlot]:
    """Where each restored disk sat on the backed-up VM: on the new VM (or the one restored into) it goes there."""
    hardware: Any = config.hardware
    devices = list(hardware.device)
    stored = {d.name: d for d in vm_disks(devices)}
    missing = sorted(restored - set(stored))
    if missing:
        raise ProviderError(f"provider vmware: the stored configuration of {desc.name} has no disk {missing[0]}")
    return {name: slot(devices, stored[name].device) for name in restored}
