"""The ``dirvm`` provider: the VMs of one folder (see ``vms.py``).

Options (``providerOptions``, or ``-o root=/srv/vms``)::

    {"root": "/srv/vms"}

Backup reads the raw images with ``pread``; holes (SEEK_HOLE) are never read.
The images must not change during a backup: a file's size or modification
time that moves fails the backup (the point-in-time rule, for a provider
that cannot take a snapshot). Restore writes a new VM: its images first under
a ``.partial`` name, then its sidecar, which makes it appear.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genievm_core.errors import ConfigError, ProviderError, RestoreTargetExistsError
from genievm_core.models.config import DiskConfig
from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo, VMDescription, VMRef
from genievm_core.plugin.protocols import BackupRequest, ChangedExtents, DiskSource, RestoreRequest

from genievm_dirvm.cbt import BlockHashCBT, map_folder, write_map
from genievm_dirvm.vms import SAFE, find_vm, sidecars, write_sidecar

__all__ = ["DirDiskSink", "DirDiskSource", "DirVMProvider"]

PARTIAL = ".partial"
CBT = BlockHashCBT()


# [guide:provider]
class DirVMProvider:
    name = "dirvm"

    def __init__(self, options: Mapping[str, Any]) -> None:
        if "root" not in options:
            raise ConfigError("invalid providerOptions: root: give the folder of the VMs (-o root=/srv/vms)")
        self.root = Path(str(options["root"]))
        if not self.root.is_dir():
            raise ConfigError(f"invalid providerOptions: root: {self.root} is not a folder")

    def list_vms(self) -> list[VMRef]:
        return [VMRef(vm.id, vm.name, vm.state) for vm in sidecars(self.root)]

    def describe_vm(self, vm_id: str) -> VMDescription:
        vm = find_vm(self.root, vm_id)  # raises VMNotFoundError
        details = {"dirvm_root": str(self.root), "dirvm_vm": vm.id}
        disks = tuple(_disk_info(name, path, details) for name, path in vm.disks().items())
        summary = {"disks": len(disks), "memory_mib": vm.data.get("memory_mib"), "state": vm.state}
        return VMDescription(vm.id, vm.name, disks, vm.sidecar.read_bytes(), "dirvm-json", summary)

    @contextmanager
    def open_backup(self, vm: VMDescription, request: BackupRequest) -> Iterator[DirBackup]:
        session = DirBackup(vm, request)
        try:
            yield session
            session.check_unchanged()  # the point in time held, or the backup fails here
        except BaseException:
            session.discard_maps()  # nothing of a failed backup is left behind
            raise
        finally:
            session.close()
        session.retire_old_maps()

    @contextmanager
    def open_restore(self, vm: VMDescription, request: RestoreRequest) -> Iterator[DirRestore]:
        session = DirRestore(self.root, vm, request)
        try:
            yield session
        except BaseException:
            session.discard()  # leaving with an error removes what was created
            raise

    def power_on(self, vm_id: str) -> None:
        vm = find_vm(self.root, vm_id)
        write_sidecar(vm.sidecar, {**vm.data, "state": "running"})

    def close(self) -> None:
        pass


# [/guide:provider]


def _disk_info(name: str, path: Path, details: dict[str, str]) -> DiskInfo:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ProviderError(f"provider dirvm: disk {name}: cannot open {path}: {exc.strerror}") from exc
    return DiskInfo(name, size, "raw-file", "raw", str(path), details)


class DirBackup:
    """The backup session: one open source per requested disk."""

    def __init__(self, vm: VMDescription, request: BackupRequest) -> None:
        self.request = request
        self.prefix = f"{request.chain_id[:16] or 'none'}-"
        self.token = self.prefix + datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        self._sources: dict[str, DirDiskSource] = {}
        try:
            for disk in vm.disks:
                if disk.name in request.disks:
                    self._sources[disk.name] = DirDiskSource(disk, self)
        except BaseException:
            self.close()
            raise

    def sources(self) -> Mapping[str, DiskSource]:
        return self._sources

    def check_unchanged(self) -> None:
        for source in self._sources.values():
            source.check_unchanged()

    def close(self) -> None:
        for source in self._sources.values():
            source.close()

    def discard_maps(self) -> None:
        for source in self._sources.values():
            (map_folder(source.info) / f"{self.token}.map").unlink(missing_ok=True)

    def retire_old_maps(self) -> None:
        """Remove this repository's older block maps: only the newest one is needed."""
        for source in self._sources.values():
            if not source.map_written:
                continue
            for path in map_folder(source.info).glob(f"{self.prefix}*.map"):
                if path.stem != self.token:
                    path.unlink(missing_ok=True)


# [guide:source]
class DirDiskSource:
    """A raw image, read with pread, at the point in time the session opened."""

    def __init__(self, info: DiskInfo, session: DirBackup) -> None:
        self._info = info
        self.session = session
        self.map_written = False
        try:
            self._fd = os.open(info.location, os.O_RDONLY)
        except OSError as exc:
            raise ProviderError(f"provider dirvm: cannot read {info.location}: {exc.strerror}") from exc
        st = os.fstat(self._fd)
        self._stamp = (st.st_size, st.st_mtime_ns)

    @property
    def info(self) -> DiskInfo:
        return self._info

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise ProviderError(f"provider dirvm: {self._info.location} ended at {offset + len(data)}")
        return data

    def allocated_extents(self) -> list[Extent] | None:
        extents: list[Extent] = []
        pos, size = 0, self._info.size
        while pos < size:
            try:
                start = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # only a hole remains
                return None  # the filesystem cannot tell: the engine reads everything
            end = min(os.lseek(self._fd, start, os.SEEK_HOLE), size)
            extents.append(Extent(start, end - start))
            pos = end
        return extents

    def changed_extents(self, token: str | None) -> ChangedExtents:
        if not self.session.request.enable_cbt:
            return ChangedExtents.unavailable("CBT disabled by enableCBT")
        return CBT.changed_extents(self._info, token)

    def next_token(self) -> str | None:
        if not self.session.request.enable_cbt:
            return None
        write_map(self._info, self.session.token, self.read)
        self.map_written = True
        return self.session.token

    def check_unchanged(self) -> None:
        st = os.fstat(self._fd)
        if (st.st_size, st.st_mtime_ns) != self._stamp:
            raise ProviderError(f"provider dirvm: {self._info.location} changed during the backup; run it again")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# [/guide:source]


class DirDiskSink:
    """A new sparse raw image, written under a ``.partial`` name until the restore commits."""

    def __init__(self, final: Path, size: int) -> None:
        self.final = final
        self.path = final.with_name(final.name + PARTIAL)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.ftruncate(self._fd, size)
        except OSError as exc:
            raise ProviderError(f"provider dirvm: cannot write {final}: {exc.strerror}") from exc

    @property
    def zeroed(self) -> bool:
        return True  # a new sparse file reads as zeros: the engine skips zero chunks

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


# [guide:restore]
class DirRestore:
    """A new VM in ``restorePath`` (or the provider's folder), named ``newVmName`` or as backed up."""

    def __init__(self, root: Path, vm: VMDescription, request: RestoreRequest) -> None:
        self.vm = vm
        self.request = request
        self.folder = request.restore_path or root
        self.vm_id = request.new_name or vm.id
        if not SAFE.match(self.vm_id):
            raise ConfigError(f"invalid RestoreConfig: newVmName: {self.vm_id!r} is not a plain name")
        self.sidecar = self.folder / f"{self.vm_id}.json"
        if self.sidecar.exists() and not request.force:
            raise RestoreTargetExistsError(f"VM {self.vm_id} exists in {self.folder}; pass --force to replace it")
        self.sinks: dict[str, DirDiskSink] = {}

    def open_sink(self, disk: DiskInfo, config: DiskConfig) -> DirDiskSink:
        if config.format not in (None, "raw"):
            raise ConfigError(f"invalid diskConfigs.{disk.name}: the dirvm provider restores raw disks only")
        target = Path(config.target) if config.target else self.folder / f"{self.vm_id}-{disk.name}.img"
        if target.exists() and not self.request.force:
            raise RestoreTargetExistsError(f"{target} exists; pass --force to overwrite it")
        sink = self.sinks[disk.name] = DirDiskSink(target, disk.size)
        return sink

    def commit(self) -> str:
        for sink in self.sinks.values():
            sink.close()
            os.replace(sink.path, sink.final)
        data = _stored_sidecar(self.vm)
        data["name"] = self.vm_id if self.request.new_name else data.get("name", self.vm_id)
        data["disks"] = {name: str(sink.final) for name, sink in self.sinks.items()}
        data["state"] = "stopped"
        write_sidecar(self.sidecar, data)  # last: the VM appears only when it is whole
        return self.vm_id

    def discard(self) -> None:
        for sink in self.sinks.values():
            sink.close()
            sink.path.unlink(missing_ok=True)


# [/guide:restore]


def _stored_sidecar(vm: VMDescription) -> dict[str, Any]:
    if vm.config_format == "dirvm-json" and vm.config:
        loaded = json.loads(vm.config)
        if isinstance(loaded, dict):
            return loaded
    return {"name": vm.name}
