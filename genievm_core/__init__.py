"""GenieVM core: plugin host, repository, copy engine, jobs and CLI.

Plugins implement the hooks in ``genievm_core.plugin.spec`` and the protocols
in ``genievm_core.plugin.protocols``; errors live in ``genievm_core.errors``.
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # looked up when asked for: importlib.metadata costs tens of milliseconds at every start of the command
    if name != "__version__":
        raise AttributeError(f"module 'genievm_core' has no attribute {name!r}")
    import importlib.metadata

    try:
        return importlib.metadata.version("genievm-core")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"
