"""The CBT source contract: tests every ``CBTSource`` must pass, run by each plugin that registers one.

A plugin's test module subclasses ``CBTSourceContract`` and supplies two fixtures:

- ``cbt_source``: the source, as the plugin registers it;
- ``cbt_case``: a ``CBTCase``: a disk the source supports (as the provider
  describes it now), the token a backup returned for it, and the extents
  written to the disk since that backup.

What the core relies on, and these tests check: the source supports the disk
and not a foreign one, its changed extents since the token are normalized,
inside the disk and cover every write, they name the source, and without a
token or with a token it does not know the answer is "not available" with a
reason (or a ``CBTError``), never a wrong list of extents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from genievm_core.errors import CBTError
from genievm_core.models.extents import Extent, intersect, normalize
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import CBTSource, ChangedExtents

__all__ = ["CBTCase", "CBTSourceContract"]


@dataclass(frozen=True)
class CBTCase:
    """A disk, the token of a backup of it, and what was written to it since."""

    disk: DiskInfo
    token: str
    written: list[Extent] = field(default_factory=list)


class CBTSourceContract:
    """Subclass as ``Test...`` and supply the ``cbt_source`` and ``cbt_case`` fixtures."""

    #: a token no backup returned
    unknown_token: ClassVar[str] = "genievm-contract-unknown-token"
    #: a disk no source supports
    foreign_disk: ClassVar[DiskInfo] = DiskInfo("contract-foreign", 1 << 20, "other", "raw", "contract:nowhere")

    @pytest.fixture
    def cbt_source(self) -> CBTSource:
        pytest.fail(f"{type(self).__name__} must override the `cbt_source` fixture")

    @pytest.fixture
    def cbt_case(self) -> CBTCase:
        pytest.fail(f"{type(self).__name__} must override the `cbt_case` fixture")

    def test_name_and_priority(self, cbt_source: CBTSource) -> None:
        assert isinstance(cbt_source.name, str) and cbt_source.name
        assert isinstance(cbt_source.priority, int)

    def test_supports_its_disk_and_not_a_foreign_one(self, cbt_source: CBTSource, cbt_case: CBTCase) -> None:
        assert cbt_source.supports(cbt_case.disk)
        assert not cbt_source.supports(self.foreign_disk)

    def test_changes_since_the_token_cover_every_write(self, cbt_source: CBTSource, cbt_case: CBTCase) -> None:
        changed = cbt_source.changed_extents(cbt_case.disk, cbt_case.token)
        assert isinstance(changed, ChangedExtents)
        assert changed.extents is not None, f"changes since a valid token are known (reason: {changed.reason})"
        extents = list(changed.extents)
        assert extents == normalize(extents), "extents are sorted, merged, non-empty"
        assert all(e.offset >= 0 and e.end <= cbt_case.disk.size for e in extents), "extents are inside the disk"
        written = normalize(cbt_case.written)
        assert intersect(extents, written) == written, f"changed extents {extents} miss writes {written}"
        assert changed.source == cbt_source.name

    def test_no_token_is_not_available(self, cbt_source: CBTSource, cbt_case: CBTCase) -> None:
        changed = cbt_source.changed_extents(cbt_case.disk, None)
        assert changed.extents is None and changed.reason, "without a token changes are not available, with a reason"

    def test_an_unknown_token_is_not_available_or_a_cbt_error(self, cbt_source: CBTSource, cbt_case: CBTCase) -> None:
        try:
            changed = cbt_source.changed_extents(cbt_case.disk, self.unknown_token)
        except CBTError:
            return
        assert changed.extents is None and changed.reason, "an unknown token gives no extents, and a reason"
