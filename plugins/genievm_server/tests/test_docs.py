"""The user guide's section on the server: its settings and policy examples are valid, its route table
names every route of the API."""

from __future__ import annotations

import json
import re
from pathlib import Path

from genievm_server.openapi import schema_text
from genievm_server.policy import Policy
from genievm_server.settings import ServerSettings

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "user-guide.md"


def _section() -> str:
    text = GUIDE.read_text()
    start = text.index("## The backup service: genievm server")
    return text[start : text.index("\n## ", start + 1)]


def _json_examples() -> list[dict[str, object]]:
    """Each indented block of the section that is a JSON object."""
    blocks = re.findall(r"\n\n((?:    .*\n)+)", _section())
    found = []
    for block in blocks:
        text = "\n".join(line[4:] for line in block.splitlines())
        if text.lstrip().startswith("{") and '"error"' not in text:
            found.append(json.loads(text))
    return found


def test_the_settings_and_policy_examples_are_valid() -> None:
    settings, policy = _json_examples()
    assert ServerSettings.model_validate(settings).repositories["main"].passphrase_file is not None
    assert set(Policy.model_validate(policy).schedules()) == {"backup", "verify", "prune", "copy"}


def test_the_route_table_names_every_route() -> None:
    def plain(text: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", text)

    section = plain(_section())
    for path in json.loads(schema_text())["paths"]:
        if path.startswith("/api/v1/"):
            assert plain(path.removeprefix("/api/v1")) in section, f"{path} is not in the user guide's route table"
    assert "/console/" in section and "/metrics" in section
