"""The errors of ``genievm serve``, ``genievm instant`` and ``genievm files`` beyond the core's (docs/errors.md)."""

from __future__ import annotations

from genievm_core.errors import GenieVMError

__all__ = ["ExportError", "GuestFilesError", "InstantBootError"]


class ExportError(GenieVMError):
    """export of {backup_id}: {problem} (nbdkit missing, failed to start, or stopped)"""

    exit_code = 30


class InstantBootError(GenieVMError):
    """instant {id}: {problem} (not a KVM backup, the VM did not start, or its disks could not be moved)"""

    exit_code = 31


class GuestFilesError(GenieVMError):
    """backup {backup_id}: {problem} (no filesystem libguestfs can read, an encrypted one, no such path, a
    target that would be written through a symlink, or libguestfs missing or failing)"""

    exit_code = 32
