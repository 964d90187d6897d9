"""The values the root command's options take, in a module that imports nothing heavy.

``genievm --help`` and ``--version`` must start fast (benchmarks/startup.py), so the
option types and defaults they declare live here, not beside structlog or the lock code.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "LOCK_STALE_AFTER",
    "MAX_COUNT",
    "MAX_SECONDS",
    "PASSPHRASE_ENV",
    "REPO_ENV",
    "LogFormat",
    "LogLevel",
]

ENTRY_POINT_GROUP = "genievm"  # the entry points of plugins (genievm_core.plugin.host)
DISABLE_AUTOLOAD_ENV = "GENIEVM_DISABLE_PLUGIN_AUTOLOAD"
PASSPHRASE_ENV = "GENIEVM_PASSPHRASE"  # a repository's passphrase
REPO_ENV = "GENIEVM_BACKUP_PATH"  # the repository, where no --repo is given

LOCK_STALE_AFTER = 1800.0  # seconds without a refresh after which another host's lock is stale (restic's 30 min)
MAX_SECONDS = 366 * 86400  # the longest wait an option takes: a year
MAX_COUNT = 1_000_000  # the most of anything an option counts (backups kept, jobs listed)


class LogLevel(StrEnum):
    """The levels ``--log-level`` takes."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    """The renderings ``--log-format`` takes: console lines or one JSON object a line."""

    CONSOLE = "console"
    JSON = "json"
