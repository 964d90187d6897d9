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

from importlib.metadata import entry_points
from typing import Any

import typer

from genievm_core.errors import PluginError

__all__ = ["COMMANDS_GROUP", "add_plugin_commands"]

COMMANDS_GROUP = "genievm.commands"


def add_plugin_commands(app: typer.Typer) -> list[str]:
    """Add every command of the ``genievm.commands`` group to ``app``; their names."""
    taken = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    added = []
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if ep.name in taken:
            continue
        try:
            target: Any = ep.load()
        except Exception as exc:  # one broken distribution must not take the other commands with it
            target = _broken(ep.name, ep.value, exc)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=ep.name)
        else:
            app.command(ep.name)(target)
        taken.add(ep.name)
        added.append(ep.name)
    return added


def _broken(name: str, value: str, exc: Exception) -> Any:
    def command() -> None:
        raise PluginError(f"plugin command {name} ({value}) failed to load: {type(exc).__name__}: {exc}")

    command.__doc__ = f"(failed to load: {type(exc).__name__})"
    return command
