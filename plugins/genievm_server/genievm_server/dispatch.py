"""Scheduled backups handed to the workers (genievm-worker) instead of run in the server's process, when the
settings name a ``broker``: each run becomes a job on its queue (the policy's ``queue``, else its provider's
plugin name), its state read back from the shared job state, which lives in the server's own database.
Without a broker (the default) the scheduler runs backups in-process as before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from genievm_core.errors import ConfigError, JobNotFoundError
from genievm_core.jobs import JobRecord, JobState
from genievm_server.policy import Policy
from genievm_server.settings import ServerSettings

if TYPE_CHECKING:
    from genievm_worker.state import SharedJobs

__all__ = ["WorkerDispatch"]


class WorkerDispatch:
    def __init__(self, settings: ServerSettings) -> None:
        try:
            from genievm_worker.state import SharedJobs
        except ImportError:
            raise ConfigError(
                "invalid configuration: broker: dispatching to workers needs the distribution genievm-worker"
            ) from None
        assert settings.broker is not None
        self.settings = settings
        self.broker = settings.broker
        self.shared: SharedJobs = SharedJobs(settings.database_url)

    def close(self) -> None:
        self.shared.close()

    def backup(self, policy: Policy, vm: str) -> str:
        """Queue a backup of ``vm`` by ``policy``: its job id."""
        from genievm_worker.submit import backup_spec, submit

        provider = self.settings.providers[policy.provider]
        repository = self.settings.repositories[policy.repository]
        config = policy.backup_config(vm, repository.url, provider.plugin, provider.options, repository.storage_options)
        return submit(self.shared, self.broker, backup_spec(config), policy.queue or provider.plugin)[0]

    def job(self, job_id: str) -> JobRecord:
        return self.shared.get(job_id)

    # a job source of the library API (genievm_core.jobs.elsewhere): the API and console list the workers' jobs

    def recent(self, states: Sequence[JobState], limit: int) -> list[JobRecord]:
        return self.shared.recent(states, limit)

    def get(self, job_id: str) -> JobRecord | None:
        try:
            return self.shared.get(job_id)
        except JobNotFoundError:
            return None
