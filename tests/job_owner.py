"""A process that owns jobs, driven through a pipe, for the job state-machine tests.

``serve(db, conn)`` runs in a forked child (no second interpreter start-up).
Its jobs are ``SteppedJob``s: real ``Job``s run by a real ``JobManager`` with the
real registry, whose chunks are released one by one by the test instead of
read from a disk, so the test knows at every moment where each job stands.

    "start"       -> "<job id>" once the job is running
    "step ID"     -> "<state>" once the job has done one more chunk (or ended)
"""

from __future__ import annotations

import queue
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from genievm_core.engine import DiskProgress
from genievm_core.jobs import Job, JobManager, JobRegistry, JobState
from genievm_core.logging import configure_logging

STEPS = 3
CHUNK = 1 << 20


class SteppedJob(Job):
    kind = "stepped"

    def __init__(self) -> None:
        super().__init__(description="stepped test job")
        self.gate: queue.Queue[None] = queue.Queue()
        self.acks: queue.Queue[int] = queue.Queue()

    def execute(self) -> dict[str, Any]:
        progress = DiskProgress("disk0", STEPS * CHUNK)
        self.on_progress(progress)
        for i in range(STEPS):
            while not self.control.cancelled:  # wait for the test to release the next chunk
                try:
                    self.gate.get(timeout=0.02)
                    break
                except queue.Empty:
                    continue
            self.control.checkpoint()  # the engine's check between chunks: blocks while paused, raises once cancelled
            progress.scanned += CHUNK
            progress.read += CHUNK
            progress.new += CHUNK
            progress.done = i == STEPS - 1
            self.on_progress(progress)
            self.acks.put(i)
        return {"steps": STEPS}


def serve(db: Path, conn: Connection) -> None:
    configure_logging("warning")
    manager = JobManager(JobRegistry(db), max_concurrent=8, poll_interval=0.02).start()
    jobs: dict[str, SteppedJob] = {}
    while True:
        command, *args = conn.recv().split()
        if command == "start":
            job = SteppedJob()
            jobs[job.id] = job
            manager.submit(job)
            while job.state is JobState.PENDING:
                job.wait(0.01)
            reply = job.id
        elif command == "step":
            job = jobs[args[0]]
            job.gate.put(None)
            while not job.finished:
                try:
                    if job.acks.get(timeout=0.01) == STEPS - 1:
                        job.wait()  # the last chunk: the job is ending
                    break
                except queue.Empty:
                    continue
            reply = job.state.value
        else:
            reply = f"unknown command {command}"
        conn.send(reply)
