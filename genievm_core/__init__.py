"""GenieVM core: plugin host, repository, copy engine, jobs and CLI.

Plugins implement the hooks in ``genievm_core.plugin.spec`` and the protocols
in ``genievm_core.plugin.protocols``; errors live in ``genievm_core.errors``.
"""

from __future__ import annotations

import importlib.metadata

__all__ = ["__version__"]

try:
    __version__ = importlib.metadata.version("genievm-core")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
