"""The shared parallel copy engine."""

from __future__ import annotations

from genievm_core.engine.backup import BackupEngine, DiskPlan
from genievm_core.engine.control import (
    DiskProgress,
    JobControl,
    ProgressCallback,
    chunk_workers,
    default_workers,
    results_or_cancel,
)
from genievm_core.engine.limits import Bandwidth, TransferLimits
from genievm_core.engine.restore import RestoreEngine
from genievm_core.engine.sources import CountingDiskSource, DiskSources

__all__ = [
    "BackupEngine",
    "Bandwidth",
    "CountingDiskSource",
    "DiskPlan",
    "DiskProgress",
    "DiskSources",
    "JobControl",
    "ProgressCallback",
    "RestoreEngine",
    "TransferLimits",
    "chunk_workers",
    "default_workers",
    "results_or_cancel",
]
