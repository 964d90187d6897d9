"""The vmware provider's options: one model, checked before connecting; its table in docs/user-guide.md and in
``genievm plugins --json``. None of these needs vCenter: a bad option stops before the connection is made."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from genievm_vmware.options import VMwareOptions

from genievm_core.errors import ConfigError
from genievm_core.plugin.options import options_table, parse_options
from genievm_core.testing import run_cli

ROOT = Path(__file__).resolve().parents[3]


def options_tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("options_tables", ROOT / "scripts" / "options_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_user_guide_table_is_the_model() -> None:
    """Re-render with ``python scripts/options_tables.py`` when the model changes."""
    assert options_tables().table_in_guide("genievm_vmware.options", "VMwareOptions") == options_table(VMwareOptions)


@pytest.mark.parametrize(
    ("option", "line"),
    [
        ("transport=nfc", "invalid providerOptions: transport: must be one of auto, https, vddk, not 'nfc'"),
        ("keepAliveSeconds=soon", "invalid providerOptions: keepAliveSeconds: Input should be a valid number, "
         "unable to parse string as a number"),  # fmt: skip
        ("keepAliveSeconds=0", "invalid providerOptions: keepAliveSeconds: Input should be greater than 0"),
        ("port=70000", "invalid providerOptions: port: Input should be less than or equal to 65535"),
        ("networkMap=VM Network", "invalid providerOptions: networkMap: 'VM Network' is not SOURCE=TARGET"),
        ("insecure=perhaps", "invalid providerOptions: insecure: Input should be a valid boolean, unable to "
         "interpret input"),  # fmt: skip
        ("datastor=DS2", "invalid providerOptions: datastor: Extra inputs are not permitted"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], option: str, line: str
) -> None:
    args = ["vms", "--provider", "vmware", "-o", "host=vc.invalid", "-o", "user=u", "-o", option]
    code, _, err = run_cli(monkeypatch, capsys, *args, env={"GENIEVM_VMWARE_PASSWORD": "pw"})
    assert (code, err.splitlines()) == (3, [f"genievm: error: {line}"])


def test_the_password_never_shows_in_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_options(VMwareOptions, {"password": "s3cr3t", "passwordFile": 7, "port": "s3cr3t"}, "providerOptions")
    assert "s3cr3t" not in str(caught.value) and "passwordFile" in str(caught.value)
    assert "s3cr3t" not in repr(parse_options(VMwareOptions, {"password": "s3cr3t"}, "providerOptions"))


def test_network_map_from_the_command_line_or_a_config_file() -> None:
    def parsed(value: object) -> dict[str, str]:
        return parse_options(VMwareOptions, {"networkMap": value}, "providerOptions").network_map

    assert parsed("VM Network=Restore, DMZ = Lab ,") == {"VM Network": "Restore", "DMZ": "Lab"}
    assert parsed({"VM Network": "Restore"}) == {"VM Network": "Restore"}
    assert parsed("=VM Network,DMZ=") == {"": "VM Network", "DMZ": ""}  # cards on no network; DMZ's dropped


def test_plugins_json_lists_the_options(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "plugins", "--json")
    assert code == 0, err
    vmware = {p["name"]: p for p in json.loads(out)}["vmware"]
    fields = {f["name"]: f for f in vmware["options"]["vmware"]}
    assert list(fields) == [f.alias for f in VMwareOptions.model_fields.values()]
    assert fields["transport"] == {"name": "transport", "type": "str", "default": "auto",
                                   "description": "`auto`, `https` or `vddk` (see Transports)"}  # fmt: skip
