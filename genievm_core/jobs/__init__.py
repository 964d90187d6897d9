"""Backup, restore and verify jobs."""

from __future__ import annotations

from genievm_core.jobs.backup import run_backup
from genievm_core.jobs.restore import RestoreResult, run_restore
from genievm_core.jobs.verify import run_verify

__all__ = ["RestoreResult", "run_backup", "run_restore", "run_verify"]
