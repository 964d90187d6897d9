"""Commands of other distributions come through the ``genievm.commands`` entry-point group, and only through it."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
from typer.testing import CliRunner

from genievm_core.cli import extra
from genievm_core.errors import PluginError


def test_a_command_that_fails_to_import_says_so_when_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # a real entry point whose module does not exist; only the lookup in the installed metadata is replaced
    broken = EntryPoint(name="mount", value="genievm_no_such_module.cli:mount", group=extra.COMMANDS_GROUP)
    monkeypatch.setattr(extra, "entry_points", lambda group: [broken] if group == extra.COMMANDS_GROUP else [])
    assert extra.plugin_commands.__wrapped__(frozenset({"backup"})) == {"mount": "genievm_no_such_module.cli:mount"}
    command = extra.load_plugin_command("mount")
    with pytest.raises(PluginError) as info:
        command()
    assert info.value.exit_code == 4
    assert str(info.value) == (
        "plugin command mount (genievm_no_such_module.cli:mount) failed to load: "
        "ModuleNotFoundError: No module named 'genievm_no_such_module'"
    )


def test_a_plugin_command_never_replaces_a_built_in_one(monkeypatch: pytest.MonkeyPatch) -> None:
    shadow = EntryPoint(name="backup", value="genievm_no_such_module.cli:backup", group=extra.COMMANDS_GROUP)
    monkeypatch.setattr(extra, "entry_points", lambda group: [shadow])
    assert extra.plugin_commands.__wrapped__(frozenset({"backup"})) == {}


def test_the_root_command_lists_and_runs_plugin_commands_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    """``genievm --help`` lists a plugin's command without importing it; running it imports it."""
    from genievm_core.cli import app

    broken = EntryPoint(name="mount", value="genievm_no_such_module.cli:mount", group=extra.COMMANDS_GROUP)
    monkeypatch.setattr(extra, "entry_points", lambda group: [broken] if group == extra.COMMANDS_GROUP else [])
    extra.plugin_commands.cache_clear()
    try:
        helped = CliRunner().invoke(app, ["--help"])
        assert helped.exit_code == 0 and "mount" in helped.output
        ran = CliRunner().invoke(app, ["mount"])
        assert isinstance(ran.exception, PluginError) and "failed to load" in str(ran.exception)
    finally:
        extra.plugin_commands.cache_clear()
