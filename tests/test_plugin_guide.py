"""docs/plugin-guide.md against the code: included code in sync, every hook and protocol member documented,
and the hook API's public names and signatures equal to the recorded list (tests/api/hook_api.txt)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from genievm_core.plugin import api, spec

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "plugin-guide.md").read_text()
RECORDED = ROOT / "tests" / "api" / "hook_api.txt"
EXAMPLE = ROOT / "docs" / "examples" / "genievm-dirvm"


def guide_includes() -> ModuleType:
    spec_ = importlib.util.spec_from_file_location("guide_includes", ROOT / "scripts" / "guide_includes.py")
    assert spec_ is not None and spec_.loader is not None
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module


def test_the_guide_includes_the_example_code_as_it_is() -> None:
    tool = guide_includes()
    assert tool.includes(GUIDE), "the guide includes code from the example plugin"
    assert tool.render(GUIDE) == GUIDE, "docs/plugin-guide.md is out of date: run python scripts/guide_includes.py"


def test_every_marked_region_of_the_example_is_in_the_guide() -> None:
    included = {(path, name) for path, name in guide_includes().includes(GUIDE)}
    marked = set()
    for path in [*EXAMPLE.rglob("*"), *(ROOT / "plugins").rglob("*.py")]:  # the example, and the plugins' regions
        if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
            for name in re.findall(r"^\s*# \[guide:([\w-]+)\]$", path.read_text(), re.M):
                marked.add((str(path.relative_to(ROOT)), name))
    assert marked and marked == included


@pytest.mark.parametrize("hook", [n for n in spec.__all__ if n.startswith("genievm_")])
def test_every_hookspec_has_a_section(hook: str) -> None:
    assert f"### `{hook}`" in GUIDE


@pytest.mark.parametrize(
    "member",
    [f"{cls}.{m}" for cls, members in sorted(api.protocol_members().items()) for m in sorted(members)],
)
def test_every_protocol_member_is_documented(member: str) -> None:
    cls, name = member.split(".")
    wanted = f"`{cls}`" if name == "__call__" else f"`{member}`"
    assert wanted in GUIDE, f"{wanted} is not in docs/plugin-guide.md"


def test_the_hook_api_is_the_recorded_one() -> None:
    """A change here is a change of the API plugins are written against: make it on purpose.

    Re-record with ``python -m genievm_core.plugin.api > tests/api/hook_api.txt`` and say what changed in
    docs/plugin-guide.md, "Versions of the hook API" (only additions within a major version).
    """
    live, recorded = api.api_lines(), RECORDED.read_text().splitlines()
    assert live == recorded, (
        f"the hook API changed: added {sorted(set(live) - set(recorded))}, "
        f"removed {sorted(set(recorded) - set(live))}"
    )
