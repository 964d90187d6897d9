"""GenieVM recovery: a backup's disks served over NBD, read on demand from the repository.

A distribution of its own above the core (the core never imports it): it adds
``genievm serve`` through the ``genievm.commands`` entry-point group. The NBD
server is nbdkit with a Python plugin (``nbdkit_plugin.py``), a small adapter
over ``DiskReader``, which reads chunks through ``Repository.get_chunk`` and
answers block status from the chunk index.

``genievm instant`` (``instant.py``, ``migrate.py``, ``instant_cli.py``) boots a KVM backup as a
new VM on qcow2 overlays over such an export, served by a detached process (``instant_owner.py``),
and later moves the running VM to its own disks; it defines VMs with the kvm plugin's public
``genievm_kvm.restore.restored_domain_xml``.

``genievm files`` (``files_cli.py``, ``files_job.py``) reads guest filesystems through libguestfs
over such an export (``guest_files.py``), writing only below its target (``extract.py``).
"""

from __future__ import annotations

from genievm_recovery.errors import ExportError, GuestFilesError, InstantBootError
from genievm_recovery.reader import ChunkCache, DiskReader

__all__ = ["ChunkCache", "DiskReader", "ExportError", "GuestFilesError", "InstantBootError"]
