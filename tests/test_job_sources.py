"""Jobs that run elsewhere (the workers') come through the ``genievm.job_sources`` entry points: ``GenieVM.jobs``
and ``job`` show them beside the registry's own, newest first, each once; a source that fails to load is left
out and the registry's jobs are still shown."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib.metadata import EntryPoint
from pathlib import Path
from types import ModuleType

import pytest

from genievm_core.api import GenieVM
from genievm_core.errors import JobNotFoundError
from genievm_core.jobs import JobRecord, JobState, elsewhere

LATER = datetime.now(UTC) + timedelta(hours=1)


def _record(job_id: str, state: JobState) -> JobRecord:
    return JobRecord(
        id=job_id, kind="backup", state=state, requested=None, description="backup of web01 on queue kvm",
        vm="web01", repository="/srv/backups", host="w1", pid=0, created_at=LATER, started_at=None,
        finished_at=None, heartbeat_at=LATER, error=None, exit_code=None, result=None,
    )  # fmt: skip


class _Remote:
    def __init__(self, job_db: Path) -> None:
        self.job_db = job_db
        self.records = [_record("remote000001", JobState.PENDING), _record("remote000002", JobState.SUCCEEDED)]

    def recent(self, states: Sequence[JobState], limit: int) -> list[JobRecord]:
        return [r for r in self.records if not states or r.state in states][:limit]

    def get(self, job_id: str) -> JobRecord | None:
        return next((r for r in self.records if r.id.startswith(job_id)), None)


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> None:
    module = ModuleType("genievm_test_job_source")
    module.source = _Remote  # type: ignore[attr-defined]
    module.broken = lambda job_db: 1 / 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    found = [
        EntryPoint(name="remote", value=f"{module.__name__}:source", group=elsewhere.JOB_SOURCES_GROUP),
        EntryPoint(name="broken", value=f"{module.__name__}:broken", group=elsewhere.JOB_SOURCES_GROUP),
    ]
    monkeypatch.setattr(elsewhere, "entry_points", lambda group: found if group == elsewhere.JOB_SOURCES_GROUP else [])


@pytest.mark.usefixtures("sources")
def test_the_registry_and_the_sources_jobs_are_listed_together(tmp_path: Path) -> None:
    with GenieVM(job_db=tmp_path / "jobs.sqlite") as genievm:
        assert [type(s).__name__ for s in genievm.job_sources] == ["_Remote"]  # the broken one left out
        assert genievm.job_sources[0].job_db == tmp_path / "jobs.sqlite"  # type: ignore[attr-defined]
        assert [r.id for r in genievm.jobs()] == ["remote000001", "remote000002"]
        assert [r.id for r in genievm.jobs([JobState.PENDING])] == ["remote000001"]
        assert genievm.job("remote000002").host == "w1"
        with pytest.raises(JobNotFoundError):
            genievm.job("nosuchjob")


@pytest.mark.usefixtures("sources")
def test_no_sources_when_plugin_autoload_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIEVM_DISABLE_PLUGIN_AUTOLOAD", "1")
    with GenieVM(job_db=tmp_path / "jobs.sqlite") as genievm:
        assert genievm.jobs() == []
