"""The job state machine, driven by hypothesis over start, step, pause, resume, cancel and crash.

The jobs run in a separate, forked process (``job_owner.py``: a real JobManager
and registry); this process acts as a second process does, through the registry
alone: it requests pause, resume and cancel and reads states and progress.
A crash is a SIGKILL of the owner; the stale-job sweep must then mark each of
its unfinished jobs failed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from job_owner import serve

from genievm_core.errors import JobNotFoundError, JobStateError
from genievm_core.jobs import FINAL_STATES, JobRecord, JobRegistry, JobState

STEPS, CHUNK = 3, 1 << 20
ACTIONS = {"pause": JobState.PAUSED, "resume": JobState.RUNNING, "cancel": JobState.CANCELLED}
ALLOWED = {
    "pause": {JobState.RUNNING},
    "resume": {JobState.PAUSED},
    "cancel": {JobState.RUNNING, JobState.PAUSED},
}


class Owner:
    """The owner process: forked, so it starts in milliseconds; killed with SIGKILL for a crash."""

    def __init__(self, db: Path) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.proc = multiprocessing.get_context("fork").Process(target=serve, args=(db, child), daemon=True)
        self.proc.start()

    def ask(self, line: str) -> str:
        self.conn.send(line)
        reply = self.conn.recv()
        assert isinstance(reply, str)
        return reply

    def kill(self) -> None:
        assert self.proc.pid is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.kill()


def wait_for(registry: JobRegistry, job_id: str, state: JobState, scanned: int) -> JobRecord:
    """The job's record once it shows ``state`` and ``scanned`` bytes (the owner writes a few times a second)."""
    deadline = time.monotonic() + 30
    while True:
        record = registry.get(job_id)
        done = sum(d.scanned for d in record.disks)
        if record.state is state and done == scanned:
            return record
        assert time.monotonic() < deadline, f"job {job_id}: {record.state} {done}, expected {state} {scanned}"
        time.sleep(0.01)


class JobStates(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.db = Path(self.dir.name) / "jobs.sqlite"
        self.registry = JobRegistry(self.db)
        self.owner: Owner | None = None
        self.model: dict[str, tuple[JobState, int]] = {}  # job id -> (state, chunks done)

    @initialize()
    def spawn(self) -> None:
        self.owner = Owner(self.db)

    def _jobs(self, states: set[JobState]) -> list[str]:
        """Job ids in the order they started: ids are random, so sorting them would make draws unreproducible."""
        return [j for j, (s, _) in self.model.items() if s in states]

    @precondition(lambda self: len(self._jobs({JobState.RUNNING, JobState.PAUSED})) < 3)
    @rule()
    def start(self) -> None:
        if self.owner is None:
            self.owner = Owner(self.db)
        job_id = self.owner.ask("start")
        self.model[job_id] = (JobState.RUNNING, 0)

    @precondition(lambda self: self._jobs({JobState.RUNNING}))
    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self._jobs({JobState.RUNNING})))
        assert self.owner is not None
        self.owner.ask(f"step {job_id}")
        done = self.model[job_id][1] + 1
        self.model[job_id] = (JobState.SUCCEEDED if done == STEPS else JobState.RUNNING, done)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), action=st.sampled_from(sorted(ACTIONS)))
    def request(self, data: st.DataObject, action: str) -> None:
        """pause, resume or cancel from this process, through the registry; refused when the state forbids it."""
        job_id = data.draw(st.sampled_from(list(self.model)))
        state, done = self.model[job_id]
        if state not in ALLOWED[action]:
            with pytest.raises(JobStateError):
                self.registry.request(job_id, action)
            return
        self.registry.request(job_id, action)
        self.model[job_id] = (ACTIONS[action], done)
        wait_for(self.registry, job_id, ACTIONS[action], done * CHUNK)

    @precondition(lambda self: self.owner is not None and self._jobs({JobState.RUNNING, JobState.PAUSED}))
    @rule()
    def crash(self) -> None:
        assert self.owner is not None
        self.owner.kill()
        self.owner = None
        swept = self.registry.sweep_stale()
        unfinished = self._jobs({JobState.RUNNING, JobState.PAUSED})
        assert sorted(swept) == sorted(unfinished)
        for job_id in unfinished:
            self.model[job_id] = (JobState.FAILED, self.model[job_id][1])
            assert "interrupted" in (self.registry.get(job_id).error or "")

    @invariant()
    def registry_matches_the_model(self) -> None:
        for job_id, (state, done) in self.model.items():
            record = wait_for(self.registry, job_id, state, done * CHUNK)
            assert record.requested is None
            assert (record.finished_at is not None) == (state in FINAL_STATES)

    def teardown(self) -> None:
        if self.owner is not None:
            self.owner.stop()
        self.registry.close()
        self.dir.cleanup()


JobStates.TestCase.settings = settings(max_examples=15, stateful_step_count=12, deadline=None)
test_job_states = JobStates.TestCase


def test_unknown_job_and_ambiguous_prefix(tmp_path: Path) -> None:
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    with pytest.raises(JobNotFoundError):
        registry.get("0123456789ab")
    with pytest.raises(JobNotFoundError):
        registry.request("nothing", "pause")
