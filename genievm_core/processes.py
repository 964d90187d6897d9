"""Is a process still running? One answer for locks, the job registry and the plugins' leftovers.

A pid is alive when ``kill(pid, 0)`` finds it (or finds it but may not signal it:
another user's) and it is not a zombie; with ``start`` (its start time, from
``process_start``) it must also be the same process, not a later one that reused
the pid. Without /proc, ``kill(0)`` is trusted.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["process_alive", "process_start"]


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None without /proc or that pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def process_start(pid: int) -> str | None:
    """The pid's start time in clock ticks since boot (Linux), to tell a reused pid from the one recorded."""
    stat = _stat(pid)
    return stat[19] if stat else None


def process_alive(pid: int, start: str | None = None) -> bool:
    """True while ``pid`` runs (and, with ``start``, is the process that started then)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OverflowError:
        return False
    stat = _stat(pid)
    if stat is None:  # gone since kill(0), or no /proc at all (then trust kill(0))
        return not Path("/proc/self").exists()
    if stat[0] in ("Z", "X"):  # killed, not yet reaped
        return False
    return start is None or stat[19] == start
