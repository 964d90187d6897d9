"""The kvm provider's options: one model, checked before connecting; its table in docs/user-guide.md and in
``genievm plugins --json``. None of these needs libvirtd: a bad option stops before the connection is made."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from genievm_kvm.options import KVMOptions
from kvm_support import CLIResult

from genievm_core.plugin.options import options_table

ROOT = Path(__file__).resolve().parents[3]


def options_tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("options_tables", ROOT / "scripts" / "options_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_user_guide_table_is_the_model() -> None:
    """Re-render with ``python scripts/options_tables.py`` when the model changes."""
    assert options_tables().table_in_guide("genievm_kvm.options", "KVMOptions") == options_table(KVMOptions)


@pytest.mark.parametrize(
    ("option", "line"),
    [
        ("nbdPort=99999", "genievm: error: invalid providerOptions: nbdPort: Input should be less than or equal to "
         "65535"),  # fmt: skip
        ("nbdPort=ten", "genievm: error: invalid providerOptions: nbdPort: Input should be a valid integer, unable to "
         "parse string as an integer"),  # fmt: skip
        ("mode=fast", "genievm: error: invalid providerOptions: mode: Input should be 'auto', 'backup-api' or "
         "'internal-snapshot'"),  # fmt: skip
        ("readOnly=maybe", "genievm: error: invalid providerOptions: readOnly: Input should be a valid boolean, "
         "unable to interpret input"),  # fmt: skip
        ("nbdprot=10810", "genievm: error: invalid providerOptions: nbdprot: Extra inputs are not permitted"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_3(cli: Callable[..., CLIResult], option: str, line: str) -> None:
    result = cli("vms", "--provider", "kvm", "-o", "uri=qemu:///nowhere", "-o", option, check=False)
    assert (result.code, result.err.splitlines()) == (3, [line])


def test_plugins_json_lists_the_options(cli: Callable[..., CLIResult]) -> None:
    kvm = {p["name"]: p for p in json.loads(cli("plugins", "--json").out)}["kvm"]
    fields = {f["name"]: f for f in kvm["options"]["kvm"]}
    assert list(fields) == [f.alias for f in KVMOptions.model_fields.values()]
    assert fields["nbdPort"] == {"name": "nbdPort", "type": "int", "default": 10809,
                                 "description": "remote URIs: that NBD server's port"}  # fmt: skip
