"""Commands of other distributions come through the ``genievm.commands`` entry-point group, and only through it."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
import typer
from typer.testing import CliRunner

from genievm_core.cli import extra
from genievm_core.errors import PluginError


def test_a_command_that_fails_to_import_says_so_when_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # a real entry point whose module does not exist; only the lookup in the installed metadata is replaced
    broken = EntryPoint(name="mount", value="genievm_no_such_module.cli:mount", group=extra.COMMANDS_GROUP)
    monkeypatch.setattr(extra, "entry_points", lambda group: [broken] if group == extra.COMMANDS_GROUP else [])
    app = typer.Typer()
    app.command("backup")(lambda: None)
    assert extra.add_plugin_commands(app) == ["mount"]
    result = CliRunner().invoke(app, ["mount"])
    assert isinstance(result.exception, PluginError) and result.exception.exit_code == 4
    assert str(result.exception) == (
        "plugin command mount (genievm_no_such_module.cli:mount) failed to load: "
        "ModuleNotFoundError: No module named 'genievm_no_such_module'"
    )


def test_a_plugin_command_never_replaces_a_built_in_one(monkeypatch: pytest.MonkeyPatch) -> None:
    shadow = EntryPoint(name="backup", value="genievm_no_such_module.cli:backup", group=extra.COMMANDS_GROUP)
    monkeypatch.setattr(extra, "entry_points", lambda group: [shadow])
    app = typer.Typer()
    app.command("backup")(lambda: None)
    assert extra.add_plugin_commands(app) == []
    assert [c.name for c in app.registered_commands] == ["backup"]
