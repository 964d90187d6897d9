#!/usr/bin/env python3
"""Render the options tables of docs/user-guide.md from the plugins' options models, so docs and code cannot drift.

In the guide, a block between

    <!-- options: MODULE:CLASS -->
    <!-- /options -->

is replaced by ``genievm_core.plugin.options.options_table(CLASS)``.
``python scripts/options_tables.py`` rewrites the guide; ``--check`` only says
whether it is in sync (exit 1 if not). Each plugin's tests/test_options.py checks its own table.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from genievm_core.plugin.options import options_table

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "user-guide.md"
BLOCK = re.compile(r"(<!-- options: (?P<module>[\w.]+):(?P<cls>\w+) -->\n)(?P<body>.*?)(<!-- /options -->)", re.S)


def render(text: str) -> str:
    def block(match: re.Match[str]) -> str:
        model = getattr(importlib.import_module(match["module"]), match["cls"])
        return f"{match.group(1)}{options_table(model)}{match.group(5)}"

    return BLOCK.sub(block, text)


def table_in_guide(module: str, cls: str) -> str:
    """The table the guide holds for ``module:cls`` (empty when it has no such block)."""
    for match in BLOCK.finditer(GUIDE.read_text()):
        if (match["module"], match["cls"]) == (module, cls):
            return match["body"]
    return ""


def main(argv: list[str]) -> int:
    text = GUIDE.read_text()
    wanted = render(text)
    if "--check" in argv:
        if wanted != text:
            print("docs/user-guide.md is out of date: run python scripts/options_tables.py", file=sys.stderr)
            return 1
        return 0
    GUIDE.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
