"""What a worker does with one job it was handed: claim it, take its VM's lock and its caps' slots, run it
through the library API (the same job code as the CLI's), keep its lease and progress fresh, record how it
ended. The Celery task (``tasks.py``) is a thin wrapper around ``WorkerRuntime.run``.

A job handed over again (the worker that had it died, the broker redelivered it) is claimed again once the
dead worker's lease has run out; the backup then resumes: the chunks the first attempt stored are found in the
repository and not uploaded again, and the provider removes the snapshot, checkpoint or export the dead worker
left when it opens the VM again (each provider's clean-up of its own stale, GenieVM-tagged, objects). A job that
already ended is not run again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genievm_core.api import BackupConfig, GenieVM, RestoreConfig, RetentionPolicy
from genievm_core.errors import GenieVMError
from genievm_core.jobs import Job
from genievm_core.logging import get_logger
from genievm_worker.coordination import Coordinator, vm_key
from genievm_worker.errors import BrokerUnreachableError
from genievm_worker.settings import WorkerSettings
from genievm_worker.state import SharedJobs

__all__ = ["Outcome", "WorkerRuntime", "build_job"]

log = get_logger("genievm.worker")
RETRY_AFTER = 3.0  # seconds before a job that could not start here (its VM busy, a cap full) is tried again
MAX_NOT_STARTED = 5  # attempts at a job that never began (its registry refused it) before it is failed


@dataclass(frozen=True)
class Outcome:
    """``state`` the job ended in (or had already), or ``retry_after`` seconds when it could not start yet."""

    state: str | None = None
    retry_after: float | None = None


class WorkerRuntime:
    """One per worker process: its settings, the shared job state, the coordinator and the library API."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.shared = SharedJobs(settings.database)
        self.coordinator = Coordinator(settings.broker, settings.lease)
        self.genievm = GenieVM(
            job_db=settings.job_db, on_warning=lambda w: log.warning("genievm.warning", warning=w)
        )
        self.providers = frozenset(self.genievm.host.providers.names())

    def close(self) -> None:
        self.genievm.close()
        self.coordinator.close()
        self.shared.close()

    def run(self, job_id: str) -> Outcome:
        name = self.settings.name
        claim = self.shared.claim(job_id, name, self.settings.lease)
        if claim.outcome == "gone":
            log.warning("worker.unknown_job", job_id=job_id)
            return Outcome("gone")
        if claim.outcome == "done":  # a redelivery of a job that ended: not run again
            log.info("worker.already_ended", job_id=job_id, state=claim.state)
            return Outcome(claim.state)
        if claim.outcome == "busy":  # another worker holds it: ask again later (it ends, or its lease runs out)
            return Outcome(retry_after=RETRY_AFTER)
        assert claim.spec is not None
        spec = claim.spec
        provider = spec.get("provider")
        if provider is not None and provider not in self.providers:
            log.warning("worker.provider_missing", job_id=job_id, provider=provider)
            self.shared.release(job_id, name)
            return Outcome(retry_after=RETRY_AFTER)
        lock = vm_key(provider, spec["vm"]) if spec.get("vm") and spec["kind"] in ("backup", "restore") else None
        caps: dict[str, int] = dict(spec.get("caps") or {})
        if lock is not None and not self.coordinator.lock_vm(lock, job_id):
            self.shared.release(job_id, name)
            return Outcome(retry_after=RETRY_AFTER)
        full = self.coordinator.take_slots(caps, job_id)
        if full is not None:
            log.info("worker.cap_full", job_id=job_id, cap=full)
            if lock is not None:
                self.coordinator.unlock_vm(lock, job_id)
            self.shared.release(job_id, name)
            return Outcome(retry_after=RETRY_AFTER)
        log.info("worker.job_started", job_id=job_id, kind=spec["kind"], vm=spec.get("vm"), attempt=claim.attempt)
        try:
            return self._execute(job_id, spec, lock, caps, claim.attempt)
        finally:
            try:
                if lock is not None:
                    self.coordinator.unlock_vm(lock, job_id)
                self.coordinator.release_slots(caps, job_id)
            except BrokerUnreachableError as exc:  # the broker is down: they expire after a lease
                log.warning("worker.release_failed", job_id=job_id, error=str(exc))

    def _execute(self, job_id: str, spec: dict[str, Any], lock: str | None, caps: dict[str, int],
                 attempt: int) -> Outcome:  # fmt: skip
        name = self.settings.name
        try:
            job = build_job(self.genievm, spec, self.settings.passphrase_file)
        except GenieVMError as exc:
            self.shared.finish(job_id, name, "failed", phase=None, progress=[], result=None, error=str(exc),
                               exit_code=exc.exit_code)  # fmt: skip
            log.warning("worker.job_refused", job_id=job_id, error=str(exc))
            return Outcome("failed")
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, job, lock, caps, stop), daemon=True)
        beat.start()
        error: Exception | None = None
        try:
            self.genievm.run(job)
        except Exception as exc:  # its outcome is in its state, recorded below
            error = exc
        finally:
            stop.set()
            beat.join()
        if not job.finished:  # it never began here (this worker's registry refused it, say): nothing was done
            log.warning("worker.job_not_started", job_id=job_id, attempt=attempt, error=str(error))
            if attempt < MAX_NOT_STARTED:
                self.shared.release(job_id, name)
                return Outcome(retry_after=RETRY_AFTER)
            self.shared.finish(job_id, name, "failed", phase=None, progress=[], result=None,
                               error=f"the job did not start on {name}: {error}",
                               exit_code=getattr(error, "exit_code", 1))  # fmt: skip
            return Outcome("failed")
        self.shared.finish(
            job_id, name, job.state.value, phase=job.phase, progress=_progress(job), result=job.result,
            error=job.error, exit_code=job.exit_code,
        )
        log.info("worker.job_ended", job_id=job_id, state=job.state.value, local_job=job.id)
        return Outcome(job.state.value)

    def _heartbeat(self, job_id: str, job: Job, lock: str | None, caps: dict[str, int], stop: threading.Event) -> None:
        interval = max(0.2, self.settings.lease / 6)
        while not stop.wait(interval):
            try:  # the broker down: the job goes on (its lock and slots lapse after a lease, as for a dead worker)
                self.coordinator.refresh(lock, caps, job_id)
            except BrokerUnreachableError as exc:
                log.warning("worker.refresh_failed", job_id=job_id, error=str(exc))
            try:
                mine = self.shared.heartbeat(job_id, self.settings.name, self.settings.lease, phase=job.phase,
                                             progress=_progress(job))  # fmt: skip
            except Exception as exc:  # a database that does not answer now: try again next beat
                log.warning("worker.heartbeat_failed", job_id=job_id, error=str(exc))
                continue
            if not mine and not job.finished:  # its lease ran out and another worker took it: stop here
                log.warning("worker.lease_lost", job_id=job_id)
                job.cancel()
                return


def _progress(job: Job) -> list[dict[str, Any]]:
    return [
        {"disk": p.disk, "total": p.total, "scanned": p.scanned, "read": p.read, "stored": p.new,
         "deduplicated": p.deduplicated, "zero": p.zero, "done": p.done}  # fmt: skip
        for p in job.progress().values()
    ]


def build_job(genievm: GenieVM, spec: dict[str, Any], passphrase_file: Path | None) -> Job:
    """The core's job for a submitted ``spec``, its repository opened with this worker's passphrase."""
    kind = spec["kind"]
    if kind == "backup":
        backup = BackupConfig.model_validate(spec["config"])
        repo = genievm.open_repository(backup.backup_path, passphrase_file, compression_level=backup.compression_level,
                                       storage_options=backup.storage_options)  # fmt: skip
        return genievm.backup_job(backup, repo)
    if kind == "restore":
        restore = RestoreConfig.model_validate(spec["config"])
        repo = genievm.open_repository(restore.backup_path, passphrase_file, storage_options=restore.storage_options)
        return genievm.restore_job(restore, repo)
    repo = genievm.open_repository(spec["repository"], passphrase_file, storage_options=spec.get("storage_options"))
    if kind == "verify":
        vm, backup_id = spec.get("vm"), spec.get("backup", "latest")
        manifests = [repo.find_backup(vm, backup_id)] if vm is not None or backup_id != "latest" else repo.manifests()
        return genievm.verify_job(repo, manifests, read_data=bool(spec.get("read_data")))
    if kind == "prune":
        return genievm.prune_job(repo, RetentionPolicy(**spec.get("keep", {})), spec.get("vms"))
    raise AssertionError(f"unknown job kind {kind}")

