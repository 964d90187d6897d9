"""Real mounts for tests of full or read-only storage; the test is skipped, with the reason, where mounting
is not allowed.

- ``mounted_tmpfs(folder, options)``: a tmpfs on ``folder`` for the block (``size=1m``: full; ``ro``).
- ``read_only_view(source, at)``: ``source`` bind-mounted read-only on ``at`` for the block, as a
  snapshot or a backup disk mounted read-only is: the kernel refuses every write (EROFS), even root's.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["mounted_tmpfs", "read_only_view"]


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


@contextmanager
def read_only_view(source: Path, at: Path) -> Iterator[Path]:
    import pytest

    at.mkdir(parents=True, exist_ok=True)
    bind = subprocess.run(["mount", "--bind", str(source), str(at)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {bind.stderr.strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(at)], capture_output=True, text=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot make a bind mount read-only here: {ro.stderr.strip()}")
        yield at
    finally:
        subprocess.run(["umount", str(at)], check=True)
