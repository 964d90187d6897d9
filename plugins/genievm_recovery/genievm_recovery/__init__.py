"""GenieVM recovery: a backup's disks served over NBD, read on demand from the repository.

A distribution of its own above the core (the core never imports it): it adds
``genievm serve`` through the ``genievm.commands`` entry-point group. The NBD
server is nbdkit with a Python plugin (``nbdkit_plugin.py``), a small adapter
over ``DiskReader``, which reads chunks through ``Repository.get_chunk`` and
answers block status from the chunk index. ``genievm files`` (``files_cli.py``) reads guest
filesystems through libguestfs over such an export (``guest_files.py``).
"""

from __future__ import annotations

from genievm_recovery.errors import ExportError, GuestFilesError
from genievm_recovery.reader import ChunkCache, DiskReader

__all__ = ["ChunkCache", "DiskReader", "ExportError", "GuestFilesError"]
