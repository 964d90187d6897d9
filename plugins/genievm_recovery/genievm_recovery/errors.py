"""The errors of ``genievm serve`` and ``genievm instant`` beyond the core's (docs/errors.md)."""

from __future__ import annotations

from genievm_core.errors import GenieVMError

__all__ = ["ExportError", "InstantBootError"]


class ExportError(GenieVMError):
    """export of {backup_id}: {problem} (nbdkit missing, failed to start, or stopped)"""

    exit_code = 30


class InstantBootError(GenieVMError):
    """instant {id}: {problem} (not a KVM backup, the VM did not start, or its disks could not be moved)"""

    exit_code = 31
