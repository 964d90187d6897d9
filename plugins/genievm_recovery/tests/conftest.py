"""Fixtures of the recovery tests: a private job registry per test, no GENIEVM_* variable of the caller."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("GENIEVM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GENIEVM_JOB_DB", str(tmp_path / "state" / "jobs.sqlite"))
    yield
