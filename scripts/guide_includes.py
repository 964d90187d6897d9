#!/usr/bin/env python3
"""Copy the marked regions of the example plugin into docs/plugin-guide.md, so guide and code cannot drift.

In a source file a region is marked ``# [guide:NAME]`` ... ``# [/guide:NAME]``.
In the guide, a block between

    <!-- include: PATH#NAME -->
    <!-- /include -->

is replaced by that region (PATH relative to the repository), fenced as code.
``python scripts/guide_includes.py`` rewrites the guide; ``--check`` only says
whether it is in sync (exit 1 if not). tests/test_plugin_guide.py runs the check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugin-guide.md"
INCLUDE = re.compile(r"(<!-- include: (?P<path>[^#\s]+)#(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /include -->)", re.S)
LANGUAGES = {".py": "python", ".toml": "toml"}


def region(path: Path, name: str) -> str:
    """The lines between the markers of region ``name`` in ``path``, without trailing blank lines."""
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == f"# [guide:{name}]"]
    ends = [i for i, line in enumerate(lines) if line.strip() == f"# [/guide:{name}]"]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"{path}: region {name} must be marked once with # [guide:{name}] ... # [/guide:{name}]")
    return "\n".join(lines[starts[0] + 1 : ends[0]]).rstrip() + "\n"


def render(guide: str) -> str:
    def block(match: re.Match[str]) -> str:
        path = ROOT / match["path"]
        fence = LANGUAGES.get(path.suffix, "")
        return f"{match.group(1)}```{fence}\n{region(path, match['name'])}```\n{match.group(5)}"

    return INCLUDE.sub(block, guide)


def includes(guide: str) -> list[tuple[str, str]]:
    return [(m["path"], m["name"]) for m in INCLUDE.finditer(guide)]


def main(argv: list[str]) -> int:
    text = GUIDE.read_text()
    wanted = render(text)
    if "--check" in argv:
        if wanted != text:
            print("docs/plugin-guide.md is out of date: run python scripts/guide_includes.py", file=sys.stderr)
            return 1
        return 0
    GUIDE.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
