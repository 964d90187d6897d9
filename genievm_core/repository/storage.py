"""Opening the storage target a repository URL names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import StorageTarget

__all__ = ["open_storage"]


def open_storage(host: PluginHost, url: str, options: Mapping[str, Any] | None = None) -> StorageTarget:
    """The storage target for ``url``: ``scheme://...``, or a plain path for ``file``."""
    scheme = urlparse(url).scheme if "://" in url else "file"
    return host.storage.get(scheme)(url, options or {})
