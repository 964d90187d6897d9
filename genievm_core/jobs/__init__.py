"""Jobs: backup, restore, verify and prune, their lifecycle, the manager and the job registry."""

from __future__ import annotations

from genievm_core.jobs.backup import BackupJob, run_backup
from genievm_core.jobs.job import FINAL_STATES, Job, JobState
from genievm_core.jobs.manager import DEFAULT_MAX_CONCURRENT_JOBS, JobManager
from genievm_core.jobs.prune import DEFAULT_GRACE, PruneJob, prune_vms, retention_policy
from genievm_core.jobs.registry import JobRecord, JobRegistry, default_job_db
from genievm_core.jobs.restore import RestoreJob, RestoreResult, run_restore
from genievm_core.jobs.verify import VerifyJob, run_verify

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_MAX_CONCURRENT_JOBS",
    "FINAL_STATES",
    "BackupJob",
    "Job",
    "JobManager",
    "JobRecord",
    "JobRegistry",
    "JobState",
    "PruneJob",
    "RestoreJob",
    "RestoreResult",
    "VerifyJob",
    "default_job_db",
    "prune_vms",
    "retention_policy",
    "run_backup",
    "run_restore",
    "run_verify",
]
