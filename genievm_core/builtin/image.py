"""The built-in ``image`` provider: a "VM" is a named set of raw disk images.

Options (``providerOptions`` in a job config, or ``--disk`` on the command line)::

    {"vms": {"web01": {"vda": "/var/lib/images/web01.img", "vdb": "/dev/vg0/data"}}}

A disk source reports allocated extents with SEEK_DATA/SEEK_HOLE, so holes
are never read; it has no changed-block tracking, so incrementals compare
chunk ids with the parent's index. The images must not change during a
backup: a change of size or modification time fails the backup. Restore
writes sparse raw images (or qcow2 ones, with ``qemu-img``), first under a
``.partial`` name, renamed into place only when every disk is complete. It
restores any provider's backup to files.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genievm_core.builtin.qcow2 import require_qemu_img, to_qcow2
from genievm_core.engine.rawdisk import RawDiskWriter
from genievm_core.errors import (
    ConfigError,
    ProviderError,
    RestoreTargetExistsError,
    VMNotFoundError,
)
from genievm_core.models.config import DiskConfig
from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo, VMDescription, VMRef
from genievm_core.plugin.marker import hookimpl
from genievm_core.plugin.protocols import (
    BackupRequest,
    ChangedExtents,
    DiskSource,
    RestoreRequest,
)
from genievm_core.plugin.registry import ProviderRegistry, SelfCheckRegistry

__all__ = ["ImageDiskSink", "ImageDiskSource", "ImageProvider"]

PARTIAL = ".genievm-partial"


@hookimpl
def genievm_register_providers(registry: ProviderRegistry) -> None:
    registry.add("image", ImageProvider)


@hookimpl
def genievm_register_self_checks(registry: SelfCheckRegistry) -> None:
    registry.add("image-contract", "genievm_core.builtin.checks::TestImageProvider")


class ImageProvider:
    name = "image"

    def __init__(self, options: Mapping[str, Any]) -> None:
        vms = options.get("vms", {})
        if not isinstance(vms, Mapping):
            raise ConfigError("invalid providerOptions: vms must map VM names to {disk: path}")
        self._vms: dict[str, dict[str, Path]] = {}
        for vm, disks in vms.items():
            if isinstance(disks, (list, tuple)):
                disks = {Path(p).stem: p for p in disks}
            if not isinstance(disks, Mapping) or not disks:
                raise ConfigError(f"invalid providerOptions: vms.{vm} must map disk names to paths")
            self._vms[str(vm)] = {str(d): Path(p) for d, p in disks.items()}

    def list_vms(self) -> list[VMRef]:
        return [VMRef(vm, vm, "stopped") for vm in sorted(self._vms)]

    def describe_vm(self, vm_id: str) -> VMDescription:
        try:
            disks = self._vms[vm_id]
        except KeyError:
            raise VMNotFoundError(f"no VM {vm_id} on provider image (give its disks with --disk)") from None
        infos = tuple(_disk_info(name, path) for name, path in disks.items())
        config = json.dumps({"name": vm_id, "disks": {d: str(p) for d, p in disks.items()}}).encode()
        return VMDescription(vm_id, vm_id, infos, config, "image-json", {"disks": len(infos)})

    @contextmanager
    def open_backup(self, vm: VMDescription, request: BackupRequest) -> Iterator[_ImageBackup]:
        sources = {d.name: ImageDiskSource(d) for d in vm.disks if d.name in request.disks}
        try:
            yield _ImageBackup(sources)
            for source in sources.values():
                source.check_unchanged()
        finally:
            for source in sources.values():
                source.close()

    @contextmanager
    def open_restore(self, vm: VMDescription, request: RestoreRequest) -> Iterator[_ImageRestore]:
        session = _ImageRestore(vm, request)
        try:
            yield session
        except BaseException:
            session.discard()
            raise

    def power_on(self, vm_id: str) -> None:
        raise ProviderError("provider image: disk images cannot be powered on")

    def close(self) -> None:
        pass


def _disk_info(name: str, path: Path) -> DiskInfo:
    try:
        st = path.stat()
    except OSError as exc:
        raise ProviderError(f"provider image: disk {name}: cannot open {path}: {exc.strerror}") from exc
    if stat.S_ISBLK(st.st_mode):
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
        return DiskInfo(name, size, "block", "raw", str(path))
    if not stat.S_ISREG(st.st_mode):
        raise ProviderError(f"provider image: disk {name}: {path} is not a file or block device")
    return DiskInfo(name, st.st_size, "raw-file", "raw", str(path))


class _ImageBackup:
    def __init__(self, sources: dict[str, ImageDiskSource]) -> None:
        self._sources = sources

    def sources(self) -> Mapping[str, DiskSource]:
        return self._sources


class ImageDiskSource:
    """A raw image or block device, read with pread: from the engine's workers at once (``ReadsConcurrently``)."""

    concurrent_reads = True

    def __init__(self, info: DiskInfo) -> None:
        self._info = info
        self.path = Path(info.location)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise ProviderError(f"provider image: cannot read {self.path}: {exc.strerror}") from exc
        st = os.fstat(self._fd)
        self._stamp = (st.st_size, st.st_mtime_ns)

    @property
    def info(self) -> DiskInfo:
        return self._info

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        while len(data) < length:
            more = os.pread(self._fd, length - len(data), offset + len(data))
            if not more:
                raise ProviderError(f"provider image: {self.path} ended at {offset + len(data)}")
            data += more
        return data

    def allocated_extents(self) -> list[Extent] | None:
        if self._info.storage_kind == "block":
            return None
        extents, pos, size = [], 0, self._info.size
        while pos < size:
            try:
                start = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # only a hole remains
                return None  # the filesystem cannot tell: read everything
            end = os.lseek(self._fd, start, os.SEEK_HOLE)
            extents.append(Extent(start, min(end, size) - start))
            pos = end
        return extents

    def changed_extents(self, token: str | None) -> ChangedExtents:
        return ChangedExtents.unavailable("the image provider has no changed-block tracking")

    def next_token(self) -> str | None:
        return None

    def check_unchanged(self) -> None:
        st = os.fstat(self._fd)
        if (st.st_size, st.st_mtime_ns) != self._stamp and self._info.storage_kind != "block":
            raise ProviderError(f"provider image: {self.path} changed during the backup; it is not consistent")

    def close(self) -> None:
        os.close(self._fd)


class ImageDiskSink:
    """A raw image being restored; new files start sparse and zeroed. Written by a ``RawDiskWriter``."""

    def __init__(self, path: Path, size: int) -> None:
        self.final = path
        self.is_block = path.exists() and stat.S_ISBLK(path.stat().st_mode)
        self.path = path if self.is_block else path.with_name(path.name + PARTIAL)
        try:
            if self.is_block:
                self._fd = os.open(path, os.O_RDWR)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                os.ftruncate(self._fd, size)
        except OSError as exc:
            raise ProviderError(f"provider image: cannot write {path}: {exc.strerror}") from exc
        self._writer = RawDiskWriter(self._fd, self.path)

    @property
    def zeroed(self) -> bool:
        return not self.is_block

    def write(self, offset: int, data: bytes) -> None:
        with self._writing():
            self._writer.write(offset, data)

    def read(self, offset: int, length: int) -> bytes:
        with self._writing():  # a queued write that failed is raised here
            return self._writer.read(offset, length)

    def close(self) -> None:
        """Flush once (everything durable), then close."""
        self._close(sync=True)

    def abandon(self) -> None:
        """Close without flushing, for a restore that failed: errors of queued writes are dropped."""
        self._close(sync=False)

    def _close(self, *, sync: bool) -> None:
        if self._fd < 0:
            return
        try:
            if sync:
                with self._writing():
                    self._writer.sync()
        finally:
            self._writer.close()
            os.close(self._fd)
            self._fd = -1

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise ProviderError(f"provider image: writing {self.final}: {exc.strerror}") from exc


class _ImageRestore:
    """Disks restored as files (or onto block devices): raw, or qcow2 (``--disk-format NAME=qcow2``), whatever
    provider made the backup. A qcow2 disk is written raw and sparse first, then converted with ``qemu-img``
    and compared with what was written, before anything is renamed into place."""

    def __init__(self, vm: VMDescription, request: RestoreRequest) -> None:
        self.vm = vm
        self.request = request
        self.sinks: list[ImageDiskSink] = []
        self.qcow2: set[str] = set()  # final paths of the disks to convert

    def open_sink(self, disk: DiskInfo, config: DiskConfig) -> ImageDiskSink:
        fmt = config.format or "raw"
        if config.target:
            target = Path(config.target)
        elif self.request.restore_path is not None:
            target = self.request.restore_path / f"{disk.name}.{'qcow2' if fmt == 'qcow2' else 'img'}"
        else:
            raise ConfigError(f"invalid RestoreConfig: restorePath: give --target, or a target for disk {disk.name}")
        if target.exists() and not self.request.force:
            raise RestoreTargetExistsError(f"{target} exists; pass --force to overwrite it")
        if fmt == "qcow2":
            require_qemu_img(disk.name)
        sink = ImageDiskSink(target, disk.size)
        if fmt == "qcow2":
            if sink.is_block:
                raise ConfigError(f"invalid diskConfigs.{disk.name}: a qcow2 disk goes to a file, not {target}")
            self.qcow2.add(str(sink.final))
        self.sinks.append(sink)
        return sink

    def commit(self) -> str:
        folders = set()
        for sink in self.sinks:
            sink.close()
        for sink in self.sinks:  # every conversion first: a failed one leaves no disk renamed into place
            if str(sink.final) in self.qcow2:
                to_qcow2(sink.path, _converted(sink))
        for sink in self.sinks:
            if str(sink.final) in self.qcow2:
                os.replace(_converted(sink), sink.final)
                sink.path.unlink()
                folders.add(sink.final.parent)
            elif sink.path != sink.final:
                os.replace(sink.path, sink.final)
                folders.add(sink.final.parent)
        for folder in folders:  # the new names durable too, not only the data
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return self.request.new_name or self.vm.id

    def discard(self) -> None:
        for sink in self.sinks:
            sink.abandon()
            if sink.path != sink.final:
                sink.path.unlink(missing_ok=True)
                _converted(sink).unlink(missing_ok=True)


def _converted(sink: ImageDiskSink) -> Path:
    return sink.final.with_name(sink.final.name + PARTIAL + "-qcow2")
