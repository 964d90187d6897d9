"""Commands that other distributions add to ``genievm``, found through the ``genievm.commands`` entry points.

A distribution adds a command by naming a function (a typer command) or a
``typer.Typer`` (a group of commands) under that group::

    [project.entry-points."genievm.commands"]
    mount = "genievm_example.cli:mount"

The entry point's name is the command's. The core imports such a command only
through this group, never by name. A command that fails to load stays listed
and says why when run (exit 4); the built-in commands are never replaced.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

from genievm_core.errors import JobInterruptedError, PluginError

__all__ = ["COMMANDS_GROUP", "JOBS_COMMANDS_GROUP", "load_plugin_command", "plugin_commands"]

COMMANDS_GROUP = "genievm.commands"
JOBS_COMMANDS_GROUP = "genievm.jobs.commands"  # subcommands of `genievm jobs` (the workers' `jobs submit`)


@functools.cache
def plugin_commands(builtin: frozenset[str], group: str = COMMANDS_GROUP) -> dict[str, str]:
    """The commands of the ``genievm.commands`` group (or ``group``): name to the distribution that adds it
    (nothing imported).

    A name in ``builtin`` (the core's own commands) is left out: the built-in commands are never replaced.
    """
    found = {}
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        if ep.name not in builtin and ep.name not in found:
            found[ep.name] = ep.dist.name if ep.dist else ep.value
    return found


def load_plugin_command(name: str, group: str = COMMANDS_GROUP) -> Any:
    """The command ``name`` of the group (a typer command function or a ``typer.Typer``), imported now;
    one that fails to import becomes a command that exits 4 when run."""
    ep = next(e for e in entry_points(group=group) if e.name == name)
    try:
        return ep.load()
    except JobInterruptedError:
        raise
    except Exception as exc:  # one broken distribution must not take the other commands with it
        return _broken(ep.name, ep.value, exc)


def _broken(name: str, value: str, exc: Exception) -> Any:
    def command() -> None:
        raise PluginError(f"plugin command {name} ({value}) failed to load: {type(exc).__name__}: {exc}")

    command.__doc__ = f"(failed to load: {type(exc).__name__})"
    return command
