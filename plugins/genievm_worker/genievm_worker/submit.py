"""Submitting jobs to the workers: one row in the shared job state (waiting), one message on its queue.

The spec names what to run in the terms of the core's configs (a BackupConfig or RestoreConfig as JSON, or a
repository and what to verify or prune), never a secret: the workers read passphrases and hypervisor passwords
from their own environment and files. A job's queue is the one given, else its provider's name (a worker
listens on its installed providers' queues by default).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from genievm_core.api import BackupConfig, RestoreConfig, RetentionPolicy
from genievm_core.jobs.job import new_job_id
from genievm_worker.errors import BrokerUnreachableError
from genievm_worker.settings import safe_url
from genievm_worker.state import SharedJobs

__all__ = ["backup_spec", "prune_spec", "restore_spec", "submit", "verify_spec"]


def backup_spec(config: BackupConfig, caps: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "kind": "backup", "provider": config.provider, "vm": config.vm_id, "repository": config.backup_path,
        "description": f"backup of {config.vm_id}", "config": config.model_dump(mode="json", by_alias=True),
        "caps": _caps(caps, config.backup_path),
    }  # fmt: skip


def restore_spec(config: RestoreConfig, caps: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "kind": "restore", "provider": config.provider, "vm": config.new_vm_name or config.vm_id,
        "repository": config.backup_path, "description": f"restore of {config.vm_id} {config.backup_id}",
        "config": config.model_dump(mode="json", by_alias=True), "caps": _caps(caps, config.backup_path),
    }  # fmt: skip


def verify_spec(repository: str, vm: str | None, backup: str, *, read_data: bool,
                storage_options: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    what = f"{vm} {backup}" if vm else "every backup"
    return {
        "kind": "verify", "provider": None, "vm": vm, "repository": repository, "backup": backup,
        "read_data": read_data, "storage_options": storage_options or {},
        "description": f"verify of {what}" + (" (read data)" if read_data else ""),
    }  # fmt: skip


def prune_spec(repository: str, keep: RetentionPolicy, vms: list[str] | None,
               storage_options: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "kind": "prune", "provider": None, "vm": None, "repository": repository, "vms": vms,
        "keep": {k: v for k, v in asdict(keep).items() if v is not None}, "storage_options": storage_options or {},
        "description": "prune" + (f" of {', '.join(vms)}" if vms else ""),
    }  # fmt: skip


def submit(shared: SharedJobs, broker: str, spec: dict[str, Any], queue: str | None = None) -> tuple[str, str]:
    """Queue ``spec``: its job id and queue. BrokerUnreachableError (and nothing recorded) when the broker
    cannot take it."""
    from kombu.exceptions import OperationalError

    from genievm_worker.tasks import RUN_JOB, make_app

    queue = queue or spec.get("provider") or "genievm"
    job_id = new_job_id()
    shared.add(job_id, spec["kind"], queue, spec, provider=spec.get("provider"), vm=spec.get("vm"),
               repository=spec.get("repository"))  # fmt: skip
    app = make_app(broker, results=False)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0.5)
            app.send_task(RUN_JOB, args=[job_id], task_id=job_id, queue=queue, retry=False, connection=connection)
    except (OperationalError, OSError) as exc:
        shared.forget(job_id)
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise BrokerUnreachableError(
            f"the broker at {safe_url(broker)} is unreachable ({reason}): job not queued"
        ) from None
    finally:
        app.close()
    return job_id, queue


def _caps(caps: dict[str, int] | None, repository: str) -> dict[str, int]:
    """``repository`` stands for this job's repository: ``{"repository": 2}`` caps the jobs into it at 2."""
    return {(f"repository:{repository}" if name == "repository" else name): n for name, n in (caps or {}).items()}
