"""The errors of ``genievm serve`` beyond the core's (docs/errors.md)."""

from __future__ import annotations

from genievm_core.errors import GenieVMError

__all__ = ["ExportError"]


class ExportError(GenieVMError):
    """export of {backup_id}: {problem} (nbdkit missing, failed to start, or stopped)"""

    exit_code = 30
