"""Entry point ``file`` in the group ``genievm``: registers the filesystem storage target."""

from __future__ import annotations

from genievm_core.plugin import StorageRegistry, hookimpl
from genievm_storage_fs.storage import open_filesystem_storage


@hookimpl
def genievm_register_storage(registry: StorageRegistry) -> None:
    registry.add("file", open_filesystem_storage)
