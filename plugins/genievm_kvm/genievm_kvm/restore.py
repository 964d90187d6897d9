"""Restore: a new VM defined from the stored domain XML, or the disks of an existing stopped VM.

A new VM gets the new name, a new UUID and new MAC addresses (libvirt generates both when
they are absent; ``keepMacs`` keeps the stored ones), and its disks under ``restorePath`` as
qcow2 or raw files, on the VM's host (over SSH for a ``qemu+ssh://`` connection: written through
``qemu-nbd`` there, the VM defined through libvirt). A backup of another provider (vmware) gets a
domain translated from its stored configuration (``genievm_core.translate``), its disks on the
``diskBus`` bus. Disks not in the backup are left out of the new VM rather than pointed at the
source VM's files. Every disk is written under a partial name and renamed into place only when all are written; the
VM is defined last. Nothing that exists is overwritten without ``--force``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import libvirt

from genievm_core.builtin.image import ImageDiskSink
from genievm_core.errors import ConfigError, ProviderError, RestoreTargetExistsError
from genievm_core.logging import get_logger
from genievm_core.models.config import DiskConfig
from genievm_core.models.vm import DiskInfo, VMDescription
from genievm_core.plugin.protocols import DiskSink, RestoreRequest
from genievm_core.translate import LIBVIRT_FORMAT, LibvirtTarget, libvirt_domain, read_config
from genievm_kvm.connection import libvirt_errors, raise_for
from genievm_kvm.domain import DiskSpec, disk_specs, state
from genievm_kvm.firmware import NVRAM_FILE, SWTPM_FILE, firmware_of, place_swtpm_state
from genievm_kvm.options import KVMOptions
from genievm_kvm.remote import Host
from genievm_kvm.sink import NBDImageSink

__all__ = ["KVMRestore", "restored_domain_xml"]

log = get_logger("genievm.kvm.restore")
Sink = ImageDiskSink | NBDImageSink


class KVMRestore:
    def __init__(
        self,
        conn: libvirt.virConnect,
        vm: VMDescription,
        request: RestoreRequest,
        host: Host,
        options: KVMOptions | None = None,
    ) -> None:
        if not vm.config:
            raise ProviderError(f"provider kvm: backup of {vm.name} holds no VM configuration to restore from")
        self.conn = conn
        self.request = request
        self.host = host
        self.options = options or KVMOptions()
        self.name = request.new_name or vm.name
        self.sinks: list[Sink] = []
        self.targets: dict[str, DiskSpec] = {}
        self.existing = _lookup(conn, self.name)
        self.translated = vm.config_format != LIBVIRT_FORMAT
        self.disk_targets = {d.name: d.name for d in vm.disks}  # backup's disk name -> the domain's target
        if self.translated:
            if self.existing is not None:
                raise RestoreTargetExistsError(
                    f"VM {self.name} exists; a backup of another provider is restored as a new VM (give --new-name)"
                )
            self.xml = self._translate(vm, request)
        else:
            self.xml = ET.fromstring(vm.config.decode())
        if self.existing is not None:
            if not request.force:
                raise RestoreTargetExistsError(f"VM {self.name} exists; pass --force to restore its disks into it")
            if self.existing.isActive():
                raise ProviderError(
                    f"provider kvm: VM {self.name} is {state(self.existing)}; stop it to restore into it"
                )
            self.targets = {s.target: s for s in disk_specs(self.existing.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))}
        self.written: dict[str, tuple[Path, str]] = {}  # disk -> (path, format) of the new VM
        self.nvram: Path | None = None  # where the backup's NVRAM was written
        # another hypervisor's NVRAM and TPM state are not OVMF's or swtpm's: a translated VM starts with none
        self.files = {} if self.translated else dict(request.files)
        if self.files and self.host.remote:  # written on this host, they would be the wrong host's files
            log.warning("kvm.files_not_restored", vm=self.name, files=sorted(self.files),
                        reason="restoring onto a remote host: its NVRAM and TPM state start fresh")  # fmt: skip
            self.files = {}
        nvram = self._nvram_path()
        if self.existing is None and nvram is not None and nvram.exists() and not request.force:
            raise RestoreTargetExistsError(f"{nvram} exists; pass --force to overwrite it")  # before any disk

    def _translate(self, vm: VMDescription, request: RestoreRequest) -> ET.Element:
        """The domain of another provider's backup, its networks checked before any disk is written."""
        restored = [d.name for d in vm.disks if not request.disk_configs.get(d.name, DiskConfig(name=d.name)).skip]
        opts = self.options
        target = LibvirtTarget(
            name=self.name,
            domain_type="kvm" if self.host.exists(Path("/dev/kvm")) else "qemu",
            disk_bus=opts.disk_bus,
            network_map=opts.network_map,
            default_network=opts.default_network,
            no_nics=opts.no_nics,
            keep_macs=opts.keep_macs,
        )
        made = libvirt_domain(read_config(vm.config_format, vm.config, vm.summary), restored, target)
        for warning in made.warnings:
            log.warning("kvm.not_carried_over", vm=self.name, detail=warning)
        for network in made.networks:
            try:
                self.conn.networkLookupByName(network)
            except libvirt.libvirtError as exc:
                known = ", ".join(sorted(self.conn.listNetworks() + self.conn.listDefinedNetworks())) or "none"
                raise ConfigError(
                    f"invalid providerOptions: networkMap: libvirt has no network {network!r} (it has: {known}); "
                    f"map the cards with -o 'networkMap=SOURCE=TARGET', give -o defaultNetwork=TARGET, "
                    "or drop them with -o noNics=true"
                ) from exc
        self.disk_targets = made.targets
        log.info("kvm.translated", vm=self.name, source_format=vm.config_format, disks=made.targets)
        return ET.fromstring(made.xml)

    def open_sink(self, disk: DiskInfo, config: DiskConfig) -> DiskSink:
        path, fmt = self._target(disk, config)
        if self.existing is None and self.host.exists(path) and not self.request.force:
            raise RestoreTargetExistsError(f"{path} exists; pass --force to overwrite it")
        sink: Sink
        if fmt == "raw" and not self.host.remote:
            sink = ImageDiskSink(path, disk.size)
        elif self.host.remote and self.host.is_block(path):
            raise ProviderError(f"provider kvm: {path} on {self.name}'s host is a block device; restore it there")
        else:
            sink = NBDImageSink(path, disk.size, fmt, self.host)
        self.sinks.append(sink)
        self.written[disk.name] = (path, fmt)
        return sink

    def _target(self, disk: DiskInfo, config: DiskConfig) -> tuple[Path, str]:
        if self.existing is not None:
            spec = self.targets.get(disk.name)
            if spec is None:
                raise ConfigError(f"invalid RestoreConfig: VM {self.name} has no disk {disk.name} to restore into")
            if spec.disk_type not in ("file", "block") or spec.format not in ("raw", "qcow2"):
                raise ProviderError(
                    f"provider kvm: cannot restore into {spec.disk_type} {spec.format} disk {disk.name}"
                )
            return Path(spec.source), spec.format
        fmt = config.format or (disk.format if disk.format in ("raw", "qcow2") else "raw")
        if config.target:
            return Path(config.target), fmt
        if self.request.restore_path is None:
            raise ConfigError(f"invalid RestoreConfig: restorePath: give where the disks of {self.name} go")
        return self.request.restore_path / f"{self.name}-{disk.name}.{fmt}", fmt

    def commit(self) -> str:
        for sink in self.sinks:
            sink.close()
        for sink in self.sinks:
            if sink.path != sink.final:
                self.host.rename(sink.path, sink.final)
        if self.existing is not None:
            xml = self.existing.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            self._write_nvram(firmware_of(xml).nvram, replace=True)
            self._place_swtpm(self.existing.UUIDString(), force=True)
            log.info("kvm.restored_into", vm=self.name, disks=sorted(self.written), files=sorted(self.files))
            return str(self.existing.UUIDString())
        dom = None
        try:
            self._write_nvram(self._nvram_path(), replace=self.request.force)
            with libvirt_errors(f"defining restored VM {self.name}"):
                dom = self.conn.defineXML(self.new_xml())
            self._place_swtpm(dom.UUIDString(), force=self.request.force)
        except BaseException:
            if dom is not None:
                with libvirt_errors(f"removing the half-restored VM {self.name}"):
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
            for sink in self.sinks:
                self.host.unlink(sink.final)
            if self.nvram:
                self.nvram.unlink(missing_ok=True)
            raise
        log.info("kvm.vm_defined", vm=self.name, uuid=dom.UUIDString(), files=sorted(self.files))
        return str(dom.UUIDString())

    def _nvram_path(self) -> Path | None:
        """Beside the disks: in ``restorePath``, or the folder of the first disk given its own target."""
        if NVRAM_FILE not in self.files or self.xml.find("os") is None:
            return None
        folders = [self.request.restore_path] if self.request.restore_path else []
        folders += [path.parent for path, _fmt in self.written.values()]
        return folders[0] / f"{self.name}_VARS.fd" if folders else None

    def _write_nvram(self, path: str | Path | None, *, replace: bool) -> None:
        data = self.files.get(NVRAM_FILE)
        if data is None or path is None:
            return
        path = Path(path)
        if path.exists() and not replace:
            raise RestoreTargetExistsError(f"{path} exists; pass --force to overwrite it")
        partial = path.with_name(f".{path.name}.partial")
        try:
            partial.write_bytes(data)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ProviderError(f"provider kvm: VM {self.name}: cannot write its NVRAM {path}: {exc.strerror}") from exc
        self.nvram = path

    def _place_swtpm(self, uuid: str, *, force: bool) -> None:
        data = self.files.get(SWTPM_FILE)
        if data is not None:
            place_swtpm_state(data, uuid, self.name, force=force)

    def discard(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            finally:
                if sink.path != sink.final:
                    self.host.unlink(sink.path)

    def new_xml(self) -> str:
        written = {target: self.written[name] for name, target in self.disk_targets.items() if name in self.written}
        return restored_domain_xml(ET.tostring(self.xml, encoding="unicode"), self.name, written,
                                   keep_macs=self.options.keep_macs, nvram=self.nvram)  # fmt: skip


def restored_domain_xml(
    xml: str,
    name: str,
    disks: Mapping[str, tuple[Path, str]],
    *,
    keep_macs: bool = False,
    nvram: Path | None = None,
) -> str:
    """The backed-up domain ``xml`` as a new VM ``name``: no UUID or title, no MAC addresses unless
    ``keep_macs`` (libvirt makes new ones), each disk of ``disks`` (target -> (path, format)) pointed at its
    file, the others left out, its NVRAM at ``nvram`` (without it, never the source VM's file: libvirt makes
    a new one from the template).

    The instant boot of genievm-recovery defines its VMs with this too.
    """
    root = ET.fromstring(xml)
    _set_text(root, "name", name)
    for tag in ("uuid", "title"):
        for el in root.findall(tag):
            root.remove(el)
    os_el = root.find("os")
    if nvram is not None and os_el is not None and os_el.find("nvram") is None:
        ET.SubElement(os_el, "nvram")
    for el in root.findall("os/nvram"):
        el.text = str(nvram) if nvram else None
    for mac in [] if keep_macs else root.iterfind("devices/interface/mac"):
        mac.attrib.pop("address", None)
    devices = root.find("devices")
    for disk in list(devices.iterfind("disk")) if devices is not None else []:
        target = disk.find("target")
        target_name = target.get("dev", "") if target is not None else ""
        if disk.get("device", "disk") != "disk":
            continue
        if target_name not in disks:
            log.warning("kvm.disk_left_out", vm=name, disk=target_name, reason="not in the backup")
            devices.remove(disk)  # type: ignore[union-attr]
            continue
        path, fmt = disks[target_name]
        _point_disk(disk, path, fmt)
    return ET.tostring(root, encoding="unicode")


def _point_disk(disk: ET.Element, path: Path, fmt: str) -> None:
    disk.set("type", "file")
    for tag in ("source", "backingStore"):
        for el in disk.findall(tag):
            disk.remove(el)
    driver = disk.find("driver")
    if driver is None:
        driver = ET.SubElement(disk, "driver", name="qemu")
    driver.set("type", fmt)
    source = ET.Element("source", file=str(path))
    disk.insert(list(disk).index(driver) + 1, source)


def _set_text(root: ET.Element, tag: str, text: str) -> None:
    el = root.find(tag)
    if el is None:
        el = ET.SubElement(root, tag)
    el.text = text


def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise_for(exc, f"looking up VM {name}")
