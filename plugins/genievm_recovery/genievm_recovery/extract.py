"""Writing files taken out of a guest under one target folder, and nowhere else.

Every name is a path relative to the target, checked part by part (no empty
part, no ``.`` or ``..``, no NUL), and every folder on the way is opened
relative to the one before it with ``O_NOFOLLOW``: a symbolic link already in
the target, or one just restored from the guest, is never followed, so
nothing (``../`` names, absolute links, a link where a folder is expected) is
written outside the target. Links from the guest are restored as links, with
their text as it is; they point where they pointed in the guest.

Files keep their mode (without setuid and setgid: their owner is whoever runs
``genievm``) and their modification and access times; folders get theirs once
everything in them is written (``finish``).
"""

from __future__ import annotations

import functools
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["TargetTree", "UnsafePathError"]

MODE_BITS = 0o1777  # permissions and the sticky bit; setuid and setgid are dropped
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_BLOCK = 1 << 20


class UnsafePathError(ValueError):
    """A name that would leave the target, or a folder that is a symbolic link there."""


def parts_of(name: str) -> list[str]:
    """The parts of a relative name (a leading ``./`` allowed); UnsafePathError for one that could escape."""
    if "\0" in name or name.startswith("/"):
        raise UnsafePathError(f"{name!r}: not a relative name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(f"{name!r}: contains '..'")
    return parts


@dataclass
class TargetTree:
    """The target folder of an extraction (made if missing); counts what it wrote."""

    root: Path
    files: int = 0
    folders: int = 0
    links: int = 0
    skipped: int = 0  # devices, fifos, sockets: not restored
    written: int = 0  # bytes of the files
    _folder_times: list[tuple[list[str], int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _folder(self, parts: list[str]) -> Iterator[int]:
        """An fd of the folder ``parts`` below the root, each part made if missing and never a link."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except (NotADirectoryError, OSError) as exc:  # ELOOP: a link; ENOTDIR: a file
                    raise UnsafePathError(
                        f"{'/'.join(parts)}: {part} is in the way (a symbolic link or a file): not followed"
                    ) from exc
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def folder(self, name: str, mode: int, atime_ns: int, mtime_ns: int) -> None:
        """The folder ``name``; its mode and times are set by ``finish``."""
        parts = parts_of(name)
        with self._folder(parts):
            pass
        self._folder_times.append((parts, mode, atime_ns, mtime_ns))
        self.folders += 1

    def file(self, name: str, write: Callable[[int], int], mode: int, atime_ns: int, mtime_ns: int) -> None:
        """The regular file ``name``, its bytes written into the fd given to ``write`` (which returns their count).

        What was there under that name (a file or a link, never a folder) is replaced.
        """
        *folder, base = self._nonempty(name)
        with self._folder(folder) as dir_fd:
            self._clear(base, dir_fd)
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dir_fd)  # fmt: skip
            try:
                self.written += write(fd)
                os.fchmod(fd, mode & MODE_BITS)
                os.utime(fd, ns=(atime_ns, mtime_ns))
            finally:
                os.close(fd)
        self.files += 1

    def link(self, name: str, target: str, atime_ns: int, mtime_ns: int) -> None:
        """The symbolic link ``name`` with the guest's text ``target`` (never followed here)."""
        *folder, base = self._nonempty(name)
        with self._folder(folder) as dir_fd:
            self._clear(base, dir_fd)
            os.symlink(target, base, dir_fd=dir_fd)
            os.utime(base, ns=(atime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
        self.links += 1

    def hard_link(self, name: str, existing: str) -> None:
        """``name`` as a second name of the file ``existing``, written before in this tree."""
        *folder, base = self._nonempty(name)
        *source_folder, source = self._nonempty(existing)
        with self._folder(source_folder) as source_fd, self._folder(folder) as dir_fd:
            self._clear(base, dir_fd)
            os.link(source, base, src_dir_fd=source_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        self.files += 1

    def finish(self) -> None:
        """Give the folders their modes and times, deepest first (writing into a folder changes its time)."""
        for parts, mode, atime_ns, mtime_ns in sorted(self._folder_times, key=lambda t: -len(t[0])):
            with self._folder(parts) as fd:
                os.fchmod(fd, mode & MODE_BITS)
                os.utime(fd, ns=(atime_ns, mtime_ns))
        self._folder_times.clear()

    def extract_tar(self, stream: IO[bytes], under: str, progress: Callable[[int], None] | None = None) -> None:
        """Every member of the tar stream (``tar_out``'s output), below ``under`` (a relative name or '')."""
        prefix = parts_of(under)
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                name = "/".join(prefix + parts_of(member.name))
                times = (int(member.mtime * 1e9),) * 2
                if member.isdir():
                    if name:
                        self.folder(name, member.mode, *times)
                    else:  # the folder asked for is the target itself: it keeps its own mode
                        self._folder_times.append(([], member.mode, *times))
                elif member.isreg():
                    source = archive.extractfile(member)
                    assert source is not None
                    self.file(name, functools.partial(_copy, source), member.mode, *times)
                elif member.issym():
                    self.link(name, member.linkname, *times)
                elif member.islnk():
                    self.hard_link(name, "/".join(prefix + parts_of(member.linkname)))
                else:
                    self.skipped += 1
                if progress is not None:
                    progress(self.written)

    def _nonempty(self, name: str) -> list[str]:
        parts = parts_of(name)
        if not parts:
            raise UnsafePathError(f"{name!r}: names the target folder itself")
        return parts

    @staticmethod
    def _clear(base: str, dir_fd: int) -> None:
        try:
            st = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{base}: a folder is in the way")
        os.unlink(base, dir_fd=dir_fd)


def _copy(source: IO[bytes], fd: int) -> int:
    n = 0
    while block := source.read(_BLOCK):
        view = memoryview(block)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        n += len(block)
    return n
