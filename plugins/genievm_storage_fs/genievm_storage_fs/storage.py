"""A storage target on a local or mounted filesystem.

Keys map to paths under the repository folder (the core's key layout already
fans chunks out by the first two hex digits of their id). A put writes a
temporary file beside the object, fsyncs it, renames it into place and fsyncs
the folder, so a reader or a crash sees the whole object or none of it. A
delete removes the folders it empties (``indexes/<backup id>/`` of a pruned
backup), and a put whose folder a concurrent delete removed makes it again.

``put_batched`` (what the core uses for chunks) writes the temporary file
only; a batch of them is made durable together, in the background once it
holds ``BATCH_BYTES`` or ``BATCH_OBJECTS`` (or ``EARLY_BYTES`` while no other
batch is being made durable, so that little is left for the end), or by
``flush()``: every file of the batch fsynced, then each renamed into place,
then each folder fsynced once. On ext4 the first fsync commits the journal
for the whole batch and the others find their data written, so a batch costs
about one journal commit where a put pays two. An object becomes visible only
once it is durable, as with ``put``: no other process can find a chunk (and
name it in its manifest) that a power loss could still take away.

Once a batch's file is durable its pages are dropped from the page cache
(``POSIX_FADV_DONTNEED``, as borg does with its segment files): a chunk is read
again by a restore, a check or a later backup that changes part of it, seldom
right away, and a backup that kept gigabytes of them cached would push out what
the host itself reads. On a VM whose host takes back freed memory, every new
page of the cache also costs a fault on the host; dropped pages are the ones
the next batch gets (docs/performance.md). Objects of ``put`` (indexes,
manifests) stay cached: the next backup reads them. A ``get`` of an object not
in the cache reads it past the cache (pagecache.py).
"""

from __future__ import annotations

import builtins
import errno
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from genievm_core.errors import (
    ConfigError,
    ObjectNotFoundError,
    StorageError,
    StorageFullError,
    StoragePermissionError,
)
from genievm_storage_fs.pagecache import ObjectReader, drop_cached

__all__ = ["FilesystemStorage", "open_filesystem_storage"]

TMP_SUFFIX = ".tmp"
CREATE_ATTEMPTS = 100  # folder made again after a concurrent delete removed it (each loss needs a new race)
LEFTOVER_AGE = 60.0  # seconds after which a temporary file where puts may be under way (locks/) is debris
BATCH_BYTES, BATCH_OBJECTS = 64 << 20, 256  # a batch of put_batched objects is made durable at either bound
EARLY_BYTES = 8 << 20  # or at this size when no batch is being made durable: little is left for flush() to wait for


def open_filesystem_storage(url: str, options: Mapping[str, Any]) -> FilesystemStorage:
    """``file:///abs/path`` or a plain path."""
    parsed = urlparse(url)
    path = unquote(parsed.path) if parsed.scheme == "file" else url
    return FilesystemStorage(Path(path), fsync=_flag(options.get("fsync", True), "fsync"))


def _flag(value: Any, name: str) -> bool:
    """A boolean option; ``--storage-option fsync=false`` gives it as a string."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"invalid configuration: storage option {name}: {value!r} is not true or false")


class FilesystemStorage:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root.absolute()
        self.url = f"file://{self.root}"
        self.fsync = fsync
        self._made: set[Path] = set()
        self._batch: list[tuple[str, Path, Path]] = []  # key, temporary file, final path
        self._batch_bytes = 0
        self._batch_lock = threading.Lock()
        self._flusher: ThreadPoolExecutor | None = None
        self._flushing: list[Future[None]] = []
        self._reader = ObjectReader()  # past the page cache where an object is not in it (pagecache.py)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or key.endswith(TMP_SUFFIX):
            raise StorageError(f"storage {self.url}: invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes | bytearray) -> None:
        tmp, path = self._write_temporary(key, data, sync=self.fsync)
        try:
            os.replace(tmp, path)
            if self.fsync:
                _fsync_dir(path.parent)
        except OSError as exc:
            _remove_quietly(tmp)
            raise self._error(exc, key) from exc

    def put_batched(self, key: str, data: bytes | bytearray) -> None:
        """Like ``put``, but the object appears with its batch, once that is durable (module docstring)."""
        if not self.fsync:
            self.put(key, data)
            return
        tmp, path = self._write_temporary(key, data, sync=False)
        with self._batch_lock:
            self._raise_failed_flush()
            self._batch.append((key, tmp, path))
            self._batch_bytes += len(data)
            full = self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_OBJECTS
            idle = not self._flushing and self._batch_bytes >= EARLY_BYTES  # (done batches were just dropped)
            if not (full or idle):
                return
            batch = self._take_batch()
            if self._flusher is None:
                self._flusher = ThreadPoolExecutor(1, thread_name_prefix="genievm-fs-flush")
            self._flushing.append(self._flusher.submit(self._make_durable, batch))

    def flush(self) -> None:
        """Make every object of ``put_batched`` durable and visible; raise the first error of any batch."""
        with self._batch_lock:
            batch = self._take_batch()
            flushing, self._flushing = self._flushing, []
        errors = []
        for fut in flushing:
            if (exc := fut.exception()) is not None:
                errors.append(exc)
        try:
            self._make_durable(batch)
        except StorageError as exc:
            errors.append(exc)
        if errors:
            raise errors[0]

    def _take_batch(self) -> builtins.list[tuple[str, Path, Path]]:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        return batch

    def _raise_failed_flush(self) -> None:
        """A background batch that failed fails the next put (the caller holds the batch lock)."""
        for fut in [f for f in self._flushing if f.done()]:
            self._flushing.remove(fut)
            if (exc := fut.exception()) is not None:
                raise exc

    def _make_durable(self, batch: builtins.list[tuple[str, Path, Path]]) -> None:
        """fsync every temporary file, rename each into place, fsync each folder once."""
        renamed, key = 0, ""
        try:
            for item in batch:
                key, tmp = item[0], item[1]
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                    drop_cached(fd)
                finally:
                    os.close(fd)
            for item in batch:
                key, tmp, path = item
                os.replace(tmp, path)
                renamed += 1
            for folder in {path.parent for _key, _tmp, path in batch}:
                key = folder.relative_to(self.root).as_posix()
                _fsync_dir(folder)
        except OSError as exc:
            for _key, tmp, _path in batch[renamed:]:
                _remove_quietly(tmp)
            raise self._error(exc, key) from exc

    def get(self, key: str) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
            try:
                return self._reader.read(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._error(exc, key) from exc

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except OSError as exc:
            raise self._error(exc, key) from exc

    def list(self, prefix: str) -> Iterator[str]:
        folder, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        if not start.is_dir():
            return

        def fail(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):  # a folder emptied and removed meanwhile holds no keys
                raise exc

        try:
            for dirpath, _dirs, files in os.walk(start, onerror=fail):
                rel = os.path.relpath(dirpath, self.root)
                for name in files:
                    if name.endswith(TMP_SUFFIX):
                        continue
                    key = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
                    if key.startswith(prefix):
                        yield key
        except OSError as exc:
            raise self._error(exc, prefix) from exc

    def delete(self, key: str) -> None:
        """Remove the object, then the folders it leaves empty (``indexes/<backup id>/``), up to the root."""
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._error(exc, key) from exc
        folder = path.parent
        while folder != self.root:
            try:
                folder.rmdir()  # only an empty folder goes; a put under way has its temporary file in it
            except OSError:  # not empty, removed meanwhile, or not ours to remove
                return
            self._made.discard(folder)
            folder = folder.parent

    def remove_leftovers(self, in_flight: tuple[str, ...] = (), age: float = LEFTOVER_AGE) -> builtins.list[str]:
        """Remove the temporary files of puts that never finished (the process was killed); their keys.

        Only safe while no other process writes objects (garbage collection calls it
        under the exclusive lock). Under the prefixes ``in_flight`` (``locks/``, put
        without holding a lock) a put may be under way right now: there only files
        older than ``age`` seconds go.
        """
        removed: builtins.list[str] = []
        now = time.time()
        for dirpath, _dirs, files in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            young_ok = rel != "." and any(f"{rel}/".startswith(prefix) for prefix in in_flight)
            for name in files:
                if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
                    continue
                path = Path(dirpath, name)
                try:
                    if young_ok and now - path.stat().st_mtime < age:
                        continue
                except OSError:
                    continue  # renamed or removed meanwhile
                _remove_quietly(path)
                removed.append(name if rel == "." else f"{rel}/{name}")
        return removed

    def close(self) -> None:
        """Make what ``put_batched`` left pending durable (a backup that failed keeps its chunks for a resume)."""
        try:
            self.flush()
        except StorageError:
            pass  # the objects that did not make it are not visible; their failure was reported by the put
        if self._flusher is not None:
            self._flusher.shutdown()
            self._flusher = None

    def _write_temporary(self, key: str, data: bytes | bytearray, *, sync: bool) -> tuple[Path, Path]:
        """Write ``data`` to a new temporary file beside the object's path (fsynced if ``sync``); both paths."""
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
        try:
            fd = self._create(tmp)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            _remove_quietly(tmp)
            raise self._error(exc, key) from exc
        return tmp, path

    def _create(self, tmp: Path) -> int:
        """Open a new temporary file, making its folder when it is not there (any more).

        A delete removes the folders it empties: one may go between the ``mkdir``
        and the ``open`` here. Then the folder is made again; once the temporary
        file is in it, the folder is not empty and stays.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for _ in range(CREATE_ATTEMPTS):
            if tmp.parent in self._made:
                try:
                    return os.open(tmp, flags, 0o600)
                except FileNotFoundError:
                    self._made.discard(tmp.parent)  # removed since, by a delete or by hand
            try:
                tmp.parent.mkdir(parents=True, exist_ok=True)
            except (FileNotFoundError, FileExistsError):
                # a parent folder was removed between two steps of the mkdir; or this folder was there for
                # its os.mkdir (EEXIST) and gone by the time mkdir looked again (exist_ok checks is_dir())
                continue
            self._made.add(tmp.parent)
        return os.open(tmp, flags, 0o600)

    def _error(self, exc: OSError, key: str) -> StorageError:
        if exc.errno == errno.ENOENT:
            return ObjectNotFoundError(f"storage {self.url}: object {key} not found")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFullError(f"storage {self.url}: no space left on device while writing {key}")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoragePermissionError(f"storage {self.url}: permission denied on {exc.filename or self.root}")
        return StorageError(f"storage {self.url}: {exc.strerror or exc} ({key})")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
