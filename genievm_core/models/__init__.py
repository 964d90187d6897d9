"""Pydantic models and small value types shared by the core and plugins."""

from __future__ import annotations

from genievm_core.models.config import BackupConfig, DiskConfig, RestoreConfig, load_config
from genievm_core.models.extents import Extent
from genievm_core.models.manifest import BackupManifest, DiskRecord, RepositoryConfig
from genievm_core.models.vm import DiskInfo, VMDescription, VMRef

__all__ = [
    "BackupConfig",
    "BackupManifest",
    "DiskConfig",
    "DiskInfo",
    "DiskRecord",
    "Extent",
    "RepositoryConfig",
    "RestoreConfig",
    "VMDescription",
    "VMRef",
    "load_config",
]
