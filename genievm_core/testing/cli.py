"""Run the ``genievm`` command in the test's own process (faster than a subprocess)."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping

import pytest

from genievm_core.logging import reset_logging

__all__ = ["error_lines", "run_cli"]

PLAINTEXT_WARNING = re.compile(r"^genievm: warning: repository \S+ is not encrypted$")


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` but the warning every command that opens an unencrypted repository prints once."""
    return [line for line in stderr.strip().splitlines() if not PLAINTEXT_WARNING.match(line)]


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    env: Mapping[str, str] | None = None,
) -> tuple[int, str, str]:
    """``genievm ARGS`` through the function the console script calls: exit code, stdout, stderr.

    ``env`` is set for the call only; logging, which the CLI bound to the captured
    stderr, is reset afterwards.
    """
    from genievm_core.cli import main

    capsys.readouterr()
    with monkeypatch.context() as m:
        for key, value in (env or {}).items():
            m.setenv(key, value)
        m.setattr(sys, "argv", ["genievm", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
    out, err = capsys.readouterr()
    reset_logging()
    code = exit_info.value.code
    return 0 if code is None else int(code), out, err
