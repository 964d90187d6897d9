"""``mounted_tmpfs(folder, options)``: a real tmpfs mounted on ``folder`` for the block.

For tests of full (``size=1m``) or read-only (``ro``) storage; the test is
skipped, with the reason, where mounting is not allowed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["mounted_tmpfs"]


@contextmanager
def mounted_tmpfs(folder: Path, options: str = "size=1m") -> Iterator[Path]:
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
