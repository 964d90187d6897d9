"""Entry point ``file`` in the group ``genievm``: the filesystem storage target and its self-check."""

from __future__ import annotations

from genievm_core.plugin import SelfCheckRegistry, StorageRegistry, hookimpl
from genievm_storage_fs.storage import open_filesystem_storage

GENIEVM_PLUGIN_API = 1  # the core's plugin API this plugin is built for (genievm_core.plugin.PLUGIN_API)


@hookimpl
def genievm_register_storage(registry: StorageRegistry) -> None:
    registry.add("file", open_filesystem_storage)


@hookimpl
def genievm_register_self_checks(registry: SelfCheckRegistry) -> None:
    registry.add("file-contract", "genievm_storage_fs.checks")
