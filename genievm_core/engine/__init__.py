"""The shared parallel copy engine."""

from __future__ import annotations

from genievm_core.engine.backup import BackupEngine, DiskPlan
from genievm_core.engine.control import (
    DiskProgress,
    JobControl,
    ProgressCallback,
    default_workers,
    results_or_cancel,
)
from genievm_core.engine.restore import RestoreEngine

__all__ = [
    "BackupEngine",
    "DiskPlan",
    "DiskProgress",
    "JobControl",
    "ProgressCallback",
    "RestoreEngine",
    "default_workers",
    "results_or_cancel",
]
