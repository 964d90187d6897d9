"""A guest's filesystems read through libguestfs, over the NBD exports of a backup's disks, read-only.

libguestfs boots a small appliance (a Linux kernel and its tools, under QEMU)
that opens the disks as NBD clients of ``genievm serve``'s nbdkit, finds the
partitions (MBR, GPT), LVM volumes and filesystems, and mounts the chosen one
read-only; nothing is mounted on the host. Its drives are opened read-only
(libguestfs puts a throw-away overlay over them), so the backup never changes.

The appliance first runs under KVM (libguestfs's default) and, when that
launch fails, under TCG (``force_tcg``): on hosts whose KVM cannot run the
appliance's kernel (nested or paravirtual KVM, as on the test machines, where
QEMU aborts at once) the second launch is the one that works. A
``LIBGUESTFS_BACKEND_SETTINGS`` of the caller is used as it is, with no retry.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import os
import posixpath
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genievm_core.logging import get_logger
from genievm_recovery.errors import GuestFilesError
from genievm_recovery.extract import TargetTree, UnsafePathError

__all__ = ["Entry", "GuestFiles", "guest_path"]

log = get_logger("genievm.files")
NOT_MOUNTABLE = frozenset({"unknown", "swap", "crypto_LUKS", "LVM2_member", ""})
_TYPES = {
    stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
    stat.S_IFBLK: "block", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
}  # fmt: skip
_BATCH = 500  # names per lstatnslist call (one protocol message)


@dataclass(frozen=True)
class Entry:
    """One name in a guest folder, as ``files ls`` shows it."""

    name: str
    type: str  # file, directory, symlink, char, block, fifo, socket
    size: int
    mode: int  # the permission bits (and setuid, setgid, sticky)
    mtime: datetime
    link: str | None = None  # a symlink's text

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "mode": f"{self.mode:04o}", "mtime": self.mtime.isoformat()}


def guest_path(path: str) -> str:
    """A path in the guest, absolute and normalised (``..`` cannot climb above the guest's root)."""
    return posixpath.normpath("/" + path.lstrip("/")) if path.strip() else "/"


def _entry(name: str, st: dict[str, int], link: str | None = None) -> Entry:
    mtime = datetime.fromtimestamp(st["st_mtime_sec"] + st["st_mtime_nsec"] / 1e9, UTC)
    kind = _TYPES.get(stat.S_IFMT(st["st_mode"]), "other")
    return Entry(name, kind, st["st_size"], stat.S_IMODE(st["st_mode"]), mtime, link if kind == "symlink" else None)


def _times(st: dict[str, int]) -> tuple[int, int]:
    return (st["st_atime_sec"] * 10**9 + st["st_atime_nsec"], st["st_mtime_sec"] * 10**9 + st["st_mtime_nsec"])


class GuestFiles:
    """The filesystems of the disks served at ``socket`` (one NBD export per disk, named after it)."""

    def __init__(self, backup_id: str, socket: Path, disks: Sequence[str]) -> None:
        self.backup_id = backup_id
        self.socket = socket
        self.disks = list(disks)
        self.handle: Any = None
        self.mounted: str | None = None

    def error(self, problem: str) -> GuestFilesError:
        return GuestFilesError(f"backup {self.backup_id}: {problem}")

    # the appliance

    def launch(self) -> None:
        """Boot the appliance over the disks (KVM, else TCG); tens of seconds under TCG."""
        try:
            guestfs = importlib.import_module("guestfs")  # Debian's python3-guestfs, linked into the venv
        except ImportError as exc:
            raise self.error("libguestfs is not installed (apt-get install python3-guestfs libguestfs-tools "
                             "linux-image-amd64)") from exc  # fmt: skip
        tries = [None] if os.environ.get("LIBGUESTFS_BACKEND_SETTINGS") else [None, ["force_tcg"]]
        for settings in tries:
            handle = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
            if not os.environ.get("LIBGUESTFS_BACKEND"):
                handle.set_backend("direct")
            if settings is not None:
                handle.set_backend_settings(settings)
            for disk in self.disks:
                handle.add_drive_opts(disk, format="raw", readonly=True, protocol="nbd",
                                      server=[f"unix:{self.socket}"])  # fmt: skip
            try:
                handle.launch()
            except RuntimeError as exc:
                handle.close()
                log.info("files.launch_failed", settings=settings, error=str(exc))
                if settings == tries[-1]:
                    raise self.error(f"the libguestfs appliance did not start: {_first_line(exc)}") from exc
                continue
            self.handle = handle
            log.info("files.launched", settings=settings)
            return

    def close(self) -> None:
        if self.handle is not None:
            try:
                self.handle.shutdown()
            finally:
                self.handle.close()
                self.handle = None

    # filesystems

    def filesystems(self) -> dict[str, str]:
        """Every filesystem libguestfs finds (partitions and logical volumes included): device to type."""
        found: dict[str, str] = self.handle.list_filesystems()
        return {dev: kind for dev, kind in found.items() if not dev.startswith("btrfsvol:")}  # subvolumes: folders

    def mount(self, wanted: str | None = None) -> str:
        """Mount read-only the filesystem ``wanted``, the only one there is, or the guest OS's as its fstab says.

        Returns what was mounted (a device, or the OS's root).
        """
        g = self.handle
        g.umount_all()
        found = self.filesystems()
        readable = {dev: kind for dev, kind in found.items() if kind not in NOT_MOUNTABLE}
        if wanted is not None:
            if wanted not in readable:
                raise self.error(f"no filesystem {wanted} to read (found: {_listing(found)})")
            self._mount(wanted, "/", found[wanted])
        elif len(readable) == 1:
            wanted = next(iter(readable))
            self._mount(wanted, "/", readable[wanted])
        elif not readable:
            found = self._probe(found)
            encrypted = [dev for dev, kind in found.items() if kind == "crypto_LUKS"]
            if encrypted:
                raise self.error(f"{', '.join(encrypted)} is encrypted (LUKS): genievm files cannot read it")
            raise self.error(f"no filesystem libguestfs can read on {', '.join(self.disks)} (found: {_listing(found)})")
        else:
            roots = g.inspect_os()
            if len(roots) != 1:
                raise self.error(f"several filesystems and no single OS: choose one with --filesystem "
                                 f"({_listing(readable)})")  # fmt: skip
            wanted = roots[0]
            mounts = g.inspect_get_mountpoints(wanted)
            for point in sorted(mounts, key=len):
                self._mount(mounts[point], point, found.get(mounts[point], "?"))
        self.mounted = wanted
        log.info("files.mounted", filesystem=wanted)
        return wanted

    def _probe(self, found: dict[str, str]) -> dict[str, str]:
        """``found`` and what every other partition, or disk without partitions, holds (LUKS is not listed)."""
        g = self.handle
        partitions: list[str] = g.list_partitions()
        unpartitioned = [d for d in g.list_devices() if not any(p.startswith(d) for p in partitions)]
        probed = dict(found)
        for device in partitions + unpartitioned:
            if device not in probed:
                try:
                    probed[device] = g.vfs_type(device) or "unknown"
                except RuntimeError:
                    probed[device] = "unknown"
        return probed

    def _mount(self, device: str, point: str, kind: str) -> None:
        try:
            self.handle.mount_ro(device, point)
        except RuntimeError as exc:
            raise self.error(f"cannot mount {device} ({kind}): {_first_line(exc)}") from exc

    # reading

    def stat(self, path: str) -> dict[str, int]:
        try:
            st: dict[str, int] = self.handle.lstatns(path)
        except RuntimeError as exc:
            raise self.error(f"{path}: no such file or directory in {self.mounted}") from exc
        return st

    def ls(self, path: str) -> list[Entry]:
        """The entries of the folder ``path`` (sorted by name), or the one entry ``path`` is."""
        path = guest_path(path)
        st = self.stat(path)
        if not stat.S_ISDIR(st["st_mode"]):
            link = self.handle.readlink(path) if stat.S_ISLNK(st["st_mode"]) else None
            return [_entry(posixpath.basename(path), st, link)]
        names = sorted(self.handle.ls(path))
        entries = []
        for i in range(0, len(names), _BATCH):
            batch = names[i : i + _BATCH]
            stats = self.handle.lstatnslist(path, batch)
            links = self.handle.readlinklist(path, batch)
            entries += [_entry(n, s, link) for n, s, link in zip(batch, stats, links, strict=True)]
        return entries

    def find(self, pattern: str, under: str = "/") -> list[str]:
        """The paths below ``under`` whose last part matches the shell pattern ``pattern`` (as ``find -name``)."""
        under = guest_path(under)
        if not stat.S_ISDIR(self.stat(under)["st_mode"]):
            raise self.error(f"{under}: not a directory in {self.mounted}")
        found = self.handle.find(under)
        paths = (posixpath.join(under, p.lstrip("/")) for p in found)  # libguestfs gives them as "/name"
        return sorted(p for p in paths if fnmatch.fnmatchcase(posixpath.basename(p), pattern))

    def total_size(self, paths: Iterable[str]) -> int:
        """About how many bytes ``get`` of ``paths`` reads (the space their files take), for progress."""
        total = 0
        for path in paths:
            st = self.stat(guest_path(path))
            total += self.handle.du(guest_path(path)) * 1024 if stat.S_ISDIR(st["st_mode"]) else st["st_size"]
        return total

    def get(self, paths: Sequence[str], tree: TargetTree, progress: Callable[[int], None] | None = None) -> None:
        """Each of ``paths`` into ``tree`` under its last name (folders whole; ``/``: the target itself)."""
        for given in paths:
            path = guest_path(given)
            st = self.stat(path)
            name = posixpath.basename(path)
            atime, mtime = _times(st)
            try:
                if stat.S_ISDIR(st["st_mode"]):
                    self._get_folder(path, name, tree, progress)
                elif stat.S_ISREG(st["st_mode"]):
                    download = functools.partial(self._download, path, st["st_size"])
                    tree.file(name, download, st["st_mode"], atime, mtime)
                elif stat.S_ISLNK(st["st_mode"]):
                    tree.link(name, self.handle.readlink(path), atime, mtime)
                else:
                    tree.skipped += 1
            except UnsafePathError as exc:
                raise self.error(f"{path}: not written: {exc}") from exc
            if progress is not None:
                progress(tree.written)
        tree.finish()

    def _download(self, path: str, size: int, fd: int) -> int:
        self.handle.download(path, f"/dev/fd/{fd}")
        return size

    def _get_folder(self, path: str, name: str, tree: TargetTree, progress: Callable[[int], None] | None) -> None:
        """``tar_out`` of the folder into a pipe, read as it comes by ``tree`` in a thread of its own."""
        read_end, write_end = os.pipe()
        failure: list[BaseException] = []

        def extract() -> None:
            with os.fdopen(read_end, "rb") as stream:
                try:
                    tree.extract_tar(stream, name, progress)
                except BaseException as exc:  # told below; closing the pipe stops tar_out
                    failure.append(exc)

        reader = threading.Thread(target=extract, name="genievm-files-extract")
        reader.start()
        try:
            self.handle.tar_out(path, f"/dev/fd/{write_end}", numericowner=True)
        except RuntimeError as exc:
            if not failure:
                failure.append(self.error(f"{path}: cannot read: {_first_line(exc)}"))
        finally:
            os.close(write_end)
            reader.join()
        if failure:
            raise failure[0]


def _listing(found: dict[str, str]) -> str:
    return ", ".join(f"{dev} {kind}" for dev, kind in sorted(found.items())) or "nothing"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
