"""Entry point ``s3`` in the group ``genievm``: registers the S3 storage target.

boto3 takes about half a second to import, so it is imported when an ``s3://``
repository is opened, not when the plugins load (every ``genievm`` command).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from genievm_core.plugin import StorageRegistry, hookimpl

GENIEVM_PLUGIN_API = 1  # the core's plugin API this plugin is built for (genievm_core.plugin.PLUGIN_API)

if TYPE_CHECKING:
    from genievm_storage_s3.storage import S3Storage


def open_s3(url: str, options: Mapping[str, Any]) -> S3Storage:
    from genievm_storage_s3.storage import open_s3_storage

    return open_s3_storage(url, options)


@hookimpl
def genievm_register_storage(registry: StorageRegistry) -> None:
    registry.add("s3", open_s3)
