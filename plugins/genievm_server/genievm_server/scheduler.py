"""The scheduler: runs each enabled policy's backups at its schedule's times.

Every ``interval`` seconds (and at once when woken) it looks at each enabled policy: when a schedule time
has come since the last one it handled, it queues one run per VM the policy selects, once however many
times were missed while the server was down, and notes that time as handled. It starts queued runs
whose VM has no backup running, within the limits of concurrent backups per policy (``max_concurrent``),
per provider and per repository (theirs in the settings); a failed run is queued again after a back-off
(``retry_backoff`` doubled each attempt) while the policy's ``retries`` allow. A policy's verify,
prune and copy schedules queue one run each (VM ``*``): a verify of its VMs' latest backups, its keep rules,
or a copy of their backups into its ``copy_to`` repository.

With a ``broker`` in the settings, backups go to the workers (genievm-worker, ``dispatch.py``) instead: a
queued run becomes a job on the policy's queue, and each tick reads back how the jobs of running runs ended.

A server that stops cleanly cancels its jobs and queues their runs again. On start it settles the runs
a killed server left: a run whose job ended takes the job's result; a run
whose job was interrupted (the core's registry marks such jobs failed) or never started is queued again.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

from genievm_core.errors import GenieVMError, JobNotFoundError
from genievm_core.jobs import Job, JobState
from genievm_core.logging import get_logger
from genievm_server.errors import VMBusyError
from genievm_server.policy import Policy, latest_slot, next_slot
from genievm_server.service import Service
from genievm_server.store import PolicyRow, RunRow

__all__ = ["Scheduler"]

log = get_logger("genievm.scheduler")
ALL_VMS = "*"  # the VM of a verify, prune or copy run: every VM of its policy
BROKER_UNREACHABLE = 36  # genievm_worker's BrokerUnreachableError (the server does not import the workers)


class Scheduler:
    def __init__(self, service: Service, *, interval: float | None = None) -> None:
        self.service = service
        self.store = service.store
        self.interval = interval if interval is not None else service.settings.scheduler_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick_lock = threading.Lock()
        service.queue_length = self.queue_length
        self.dispatch = service.dispatch

    def start(self) -> Scheduler:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="genievm-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def wake(self) -> None:
        self._wake.set()

    def queue_length(self) -> int:
        return sum(1 for run in self.store.runs(unfinished=True, limit=100_000) if run.state == "queued")

    # what it does

    def tick(self, now: datetime | None = None) -> None:
        """Queue the runs whose time has come, then start the queued runs that can start."""
        with self._tick_lock:
            now = now or datetime.now(UTC)
            for row in self.store.policies():
                if row.enabled:
                    try:
                        self._queue_due(row, now)
                    except GenieVMError as exc:  # e.g. the provider cannot list its VMs now
                        log.warning("scheduler.policy_failed", policy=row.name, error=str(exc))
            if self.dispatch is not None:
                self._settle_dispatched()
            self._start_queued(now)

    def run_now(self, name: str) -> list[RunRow]:
        """Queue one run per VM of policy ``name`` at once (enabled or not) and start what can start."""
        row = self.store.policy(name)
        policy = Policy.model_validate(row.spec)
        slot = datetime.now(UTC).isoformat()
        queued = [self.store.add_run(name, vm, "backup", slot) for vm in self._vms(policy)]
        self.wake()
        return queued

    def recover(self) -> None:
        """Settle the runs a server that stopped (or was killed) left unfinished."""
        for run in self.store.runs(unfinished=True, limit=100_000):
            if run.state != "running":
                continue  # queued: it starts as it would have
            if self.dispatch is not None and run.kind == "backup":
                continue  # a worker's job: the ticks read how it ended
            try:  # the registry marks a job whose process died failed
                record = self.service.job(run.job_id) if run.job_id is not None else None
            except JobNotFoundError:
                record = None
            if record is not None and not record.finished:
                continue  # still running in a process that lives
            if record is not None and record.state is JobState.SUCCEEDED:
                self.store.update_run(run.id, state="succeeded")
                continue
            why = record.error if record is not None else "its job is not in the job registry"
            self.store.update_run(run.id, state="failed", error=why)
            self.store.add_run(run.policy, run.vm, run.kind, run.slot, attempt=run.attempt)
            log.warning("scheduler.rerun_interrupted", policy=run.policy, vm=run.vm, job_id=run.job_id)

    # internals

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the scheduler must outlive one bad look at the database
                log.error("scheduler.tick_failed", error=str(exc), exc_info=True)
            self._wake.wait(self.interval)
            self._wake.clear()

    def _queue_due(self, row: PolicyRow, now: datetime) -> None:
        policy = Policy.model_validate(row.spec)
        for kind, schedule in policy.schedules().items():
            handled = row.last_slot if kind == "backup" else self.store.slot(row.name, kind)
            if next_slot(schedule, datetime.fromisoformat(handled or row.created_at)) > now:
                continue
            slot = latest_slot(schedule, now).astimezone(UTC).isoformat()  # missed ones: one run
            if kind == "backup":
                self.store.set_last_slot(row.name, slot)
                self.store.add_runs(row.name, self._vms(policy), kind, slot)
            else:  # one run for all the policy's VMs
                self.store.set_slot(row.name, kind, slot)
                self.store.add_runs(row.name, [ALL_VMS], kind, slot)
            log.info("scheduler.due", policy=row.name, kind=kind, slot=slot)

    def _vms(self, policy: Policy) -> list[str]:
        return policy.select(self.service.list_vms(policy.provider))

    def _start_queued(self, now: datetime) -> None:
        unfinished = self.store.runs(unfinished=True, limit=100_000)
        policies = {row.name: Policy.model_validate(row.spec) for row in self.store.policies()}
        running: Counter[tuple[str, str]] = Counter()
        busy = {run.vm for run in unfinished if run.state == "running" and run.kind == "backup"}
        for run in unfinished:
            if run.state == "running" and run.policy in policies:
                running.update(self._limits(policies[run.policy]).keys())
        for run in sorted((r for r in unfinished if r.state == "queued"), key=lambda r: r.id):
            if run.not_before is not None and datetime.fromisoformat(run.not_before) > now:
                continue
            policy = policies.get(run.policy)
            if policy is None:
                self.store.update_run(run.id, state="skipped", error="the policy was deleted")
                continue
            if run.kind != "backup":
                self._start_task(run, policy)
                continue
            if run.vm in busy or self.service.vm_busy(run.vm):
                continue  # it waits, queued, until the VM's backup has ended
            if any(limit is not None and running[key] >= limit for key, limit in self._limits(policy).items()):
                continue  # it waits for a backup of its policy, provider or repository to end
            if self.dispatch is not None:
                if self._dispatch(run, policy):
                    running.update(self._limits(policy).keys())
                    busy.add(run.vm)
                continue
            running.update(self._limits(policy).keys())
            self.store.update_run(run.id, state="running")  # before the job starts: it may end at once
            try:
                job = self.service.start_backup(
                    policy.provider,
                    run.vm,
                    policy.repository,
                    policy.backup,
                    on_end=functools.partial(self._ended, run, policy),
                )
            except VMBusyError:
                self.store.update_run(run.id, state="queued")
                continue
            except GenieVMError as exc:
                self.store.update_run(run.id, state="failed", error=str(exc))
                self._retry(run, policy)
                continue
            self.store.update_run(run.id, job_id=job.id)

    def _dispatch(self, run: RunRow, policy: Policy) -> bool:
        """Hand a backup run to the workers; whether it was queued (a broker that is down: it stays queued)."""
        assert self.dispatch is not None
        try:
            job_id = self.dispatch.backup(policy, run.vm)
        except GenieVMError as exc:
            if exc.exit_code == BROKER_UNREACHABLE:
                log.warning("scheduler.broker_unreachable", policy=run.policy, vm=run.vm, error=str(exc))
                return False
            self.store.update_run(run.id, state="failed", error=str(exc))
            self._retry(run, policy)
            return False
        self.store.update_run(run.id, state="running", job_id=job_id)
        return True

    def _settle_dispatched(self) -> None:
        """The runs whose worker's job has ended take its result (a failed one is retried, as in-process)."""
        assert self.dispatch is not None
        policies = {row.name: Policy.model_validate(row.spec) for row in self.store.policies()}
        for run in self.store.runs(unfinished=True, limit=100_000):
            if run.state != "running" or run.kind != "backup" or run.job_id is None:
                continue
            try:
                record = self.dispatch.job(run.job_id)
            except JobNotFoundError:
                continue
            if not record.finished:
                continue
            self.store.update_run(run.id, state=record.state.value, error=record.error)
            if record.state is JobState.FAILED and run.policy in policies:
                self._retry(run, policies[run.policy])

    def _start_task(self, run: RunRow, policy: Policy) -> None:
        """A verify, prune or copy run of ``policy``: one job for all its VMs."""
        self.store.update_run(run.id, state="running")
        starts = {"verify": self.service.start_policy_verify, "copy": self.service.start_policy_copy}
        start = starts.get(run.kind, self.service.start_policy_prune)
        try:
            job = start(policy, self._vms(policy), functools.partial(self._ended, run, policy))
        except GenieVMError as exc:
            self.store.update_run(run.id, state="failed", error=str(exc))
            return
        self.store.update_run(run.id, job_id=job.id)

    def _limits(self, policy: Policy) -> dict[tuple[str, str], int | None]:
        """The limits a backup of ``policy`` counts against: its own, its provider's, its repository's."""
        provider = self.service.settings.providers.get(policy.provider)
        repository = self.service.settings.repositories.get(policy.repository)
        return {
            ("policy", policy.name): policy.max_concurrent,
            ("provider", policy.provider): provider.max_concurrent if provider else None,
            ("repository", policy.repository): repository.max_concurrent if repository else None,
        }

    def _ended(self, run: RunRow, policy: Policy, job: Job) -> None:
        if job.state is JobState.CANCELLED and self._stop.is_set():  # the server stops: run it when it is back
            self.store.update_run(run.id, state="queued", job_id=None)
            return
        self.store.update_run(run.id, state=job.state.value, job_id=job.id, error=job.error)
        if job.state is JobState.FAILED and run.kind == "backup":
            self._retry(run, policy)
        self.wake()  # a run that waited for this VM may start now

    def _retry(self, run: RunRow, policy: Policy) -> None:
        if run.attempt > policy.retries:
            return
        delay = self.service.settings.retry_backoff * 2 ** (run.attempt - 1)
        not_before = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat()
        self.store.add_run(run.policy, run.vm, run.kind, run.slot, attempt=run.attempt + 1, not_before=not_before)
        log.info("scheduler.retry", policy=run.policy, vm=run.vm, attempt=run.attempt + 1, not_before=not_before)
