"""The CLI's surface (issue 21, part 3): every option has help and a metavar that reads like restic's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from genievm_core.cli import app


def commands(group: Any, path: str = "genievm") -> Iterator[tuple[str, Any]]:
    yield path, group
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            yield from commands(sub, f"{path} {name}")


def test_every_option_has_help_and_a_readable_metavar() -> None:
    problems = []
    for path, command in commands(typer.main.get_command(app)):
        for param in command.params:
            if param.param_type_name != "option" or param.name in ("help", "install_completion", "show_completion"):
                continue
            if not param.help:
                problems.append(f"{path} {param.opts[0]}: no help")
            if not param.is_flag and (param.metavar is None or param.metavar.startswith("<")):
                problems.append(f"{path} {param.opts[0]}: metavar {param.metavar!r}")
    assert problems == []


def test_shell_completion_is_enabled(genievm_exe: Any) -> None:
    result = genievm_exe("--show-completion", "bash")
    assert result.code == 0, result.stderr
    assert "_GENIEVM_COMPLETE=complete_bash" in result.stdout
