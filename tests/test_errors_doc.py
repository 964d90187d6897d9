"""Every error class and its exit code is documented in docs/errors.md."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from genievm_core import errors

DOC = (Path(__file__).parents[1] / "docs" / "errors.md").read_text()
CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.GenieVMError)]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_error_is_documented_with_its_exit_code(cls: type[errors.GenieVMError]) -> None:
    row = re.search(rf"^\| (\d+) \| `{cls.__name__}` \|", DOC, re.M)
    assert row, f"{cls.__name__} is not in docs/errors.md"
    assert int(row.group(1)) == cls.exit_code


def test_exit_codes_are_unique() -> None:
    codes = [c.exit_code for c in CLASSES]
    assert len(codes) == len(set(codes))
