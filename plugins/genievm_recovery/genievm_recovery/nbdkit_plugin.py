"""The nbdkit Python plugin (API 2) that serves the disks of one backup, one export per disk.

Run by ``genievm serve`` (never imported by GenieVM itself) as::

    nbdkit -f python nbdkit_plugin.py repo=URL backup=ID disks=vda,vdb cache=BYTES [passphrase_fd=N] [limits=PATH]

It runs in nbdkit's embedded CPython 3.11, not GenieVM's virtual environment:
``GENIEVM_SITE_DIRS`` (in nbdkit's environment) names the site-packages folders
to add, with their ``.pth`` files, so that ``genievm_core`` imports. The
passphrase arrives through the pipe ``passphrase_fd`` (read once, then closed),
never in nbdkit's argv; storage options through ``GENIEVM_STORAGE_OPTIONS``.
The export name is the disk's name; the default export is the first disk.
``limits`` names the file of the job's bandwidth limits (``genievm_core.engine.limits``):
the chunks fetched from the repository are read at most at its read rate.
"""

from __future__ import annotations

import os
import site
import sys

_before = list(sys.path)
for _folder in filter(None, os.environ.get("GENIEVM_SITE_DIRS", "").split(os.pathsep)):
    site.addsitedir(_folder)
# GenieVM's folders first: Debian's dist-packages holds older copies of some of its dependencies (cryptography)
sys.path[:] = [p for p in sys.path if p not in _before] + _before

import errno  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import nbdkit  # noqa: E402

from genievm_core.api import GenieVM  # noqa: E402
from genievm_core.engine.limits import LimitsFile  # noqa: E402
from genievm_recovery.reader import ChunkCache, DiskReader  # noqa: E402

API_VERSION = 2

_config: dict[str, str] = {}
_readers: dict[str, DiskReader] = {}
_names: list[str] = []


def config(key: str, value: str) -> None:
    _config[key] = value


def config_complete() -> None:
    for key in ("repo", "backup", "disks", "cache"):
        if key not in _config:
            raise RuntimeError(f"genievm plugin: {key}= is required")


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def get_ready() -> None:
    """Open the repository, the backup and each disk's index once, before any client connects."""
    passphrase = None
    if "passphrase_fd" in _config:
        with os.fdopen(int(_config["passphrase_fd"]), "r", encoding="utf-8") as pipe:
            passphrase = pipe.read()
    with GenieVM() as genievm:
        repo = genievm.open_repository(_config["repo"], passphrase=passphrase)
    manifest = repo.find_backup(None, _config["backup"])
    cache = ChunkCache(int(_config["cache"]))
    disks = {d.name: d for d in manifest.disks}
    limits = LimitsFile(Path(_config["limits"])) if "limits" in _config else None

    def fetch(chunk_id: bytes) -> bytes:  # one bucket for every disk and client of the export
        data = repo.get_chunk(chunk_id)
        if limits is not None:
            limits.refresh()
            limits.limits.read.take(len(data))
        return data

    for name in _config["disks"].split(","):
        _readers[name] = DiskReader(repo, repo.disk_index(disks[name]), cache)
        _readers[name].fetch = fetch
        _names.append(name)


def list_exports(readonly: bool, is_tls: bool) -> list[str]:
    return list(_names)


def default_export(readonly: bool, is_tls: bool) -> str:
    return _names[0]


def open(readonly: bool) -> DiskReader:  # noqa: A001 (nbdkit's name)
    name = nbdkit.export_name() or _names[0]
    reader = _readers.get(name)
    if reader is None:
        nbdkit.set_error(errno.ENOENT)
        raise RuntimeError(f"no export {name!r} (exports: {', '.join(_names)})")
    return reader


def get_size(h: DiskReader) -> int:
    return h.size


def can_write(h: DiskReader) -> bool:
    return False


def can_multi_conn(h: DiskReader) -> bool:
    return True


def can_extents(h: DiskReader) -> bool:
    return True


def is_rotational(h: DiskReader) -> bool:
    return False


def pread(h: DiskReader, buf: Any, offset: int, flags: int) -> None:
    h.read_into(memoryview(buf), offset)


def extents(h: DiskReader, count: int, offset: int, flags: int) -> list[tuple[int, int, int]]:
    hole = int(nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO)
    runs = h.extents(offset, count)
    if flags & nbdkit.FLAG_REQ_ONE:
        runs = runs[:1]
    return [(start, length, hole if is_hole else 0) for start, length, is_hole in runs]
