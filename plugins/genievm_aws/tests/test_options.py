"""The aws provider's options: one model, checked before any AWS call; its table in docs/user-guide.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from genievm_aws.options import AWSOptions

from genievm_core.errors import ConfigError
from genievm_core.plugin.options import options_table, parse_options

ROOT = Path(__file__).resolve().parents[3]


def options_tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("options_tables", ROOT / "scripts" / "options_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_user_guide_table_is_the_model() -> None:
    """Re-render with ``python scripts/options_tables.py`` when the model changes."""
    assert options_tables().table_in_guide("genievm_aws.options", "AWSOptions") == options_table(AWSOptions)


def test_options_from_the_command_line_are_parsed() -> None:
    options = parse_options(
        AWSOptions, {"keepSnapshots": "2", "securityGroupIds": "sg-1, sg-2", "restoreTo": "Volumes"}, "providerOptions"
    )
    assert options.keep_snapshots == 2
    assert options.security_group_ids == ("sg-1", "sg-2")
    assert options.restore_to == "volumes"


@pytest.mark.parametrize(
    ("given", "line"),
    [
        ({"keepSnapshots": "-1"}, "invalid providerOptions: keepSnapshots: Input should be greater than or equal to 0"),
        ({"blockThreads": "0"}, "invalid providerOptions: blockThreads: Input should be greater than or equal to 1"),
        ({"accessKeyId": "AKIA..."}, "invalid providerOptions: accessKeyId: Extra inputs are not permitted"),
    ],
)
def test_a_bad_option_is_one_line(given: dict[str, str], line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_options(AWSOptions, given, "providerOptions")
    assert str(caught.value) == line
