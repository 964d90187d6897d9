"""The server's Prometheus metrics, in a registry of its own (one per app, never the global one)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from genievm_core.jobs import Job, JobState

__all__ = ["Metrics"]


class Metrics:
    def __init__(self, queue_length: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        vm = ["vm"]
        self.last_success = Gauge(
            "genievm_backup_last_success_timestamp_seconds",
            "when the VM's last successful backup ended (Unix time)",
            vm,
            registry=self.registry,
        )
        self.duration = Gauge(
            "genievm_backup_duration_seconds",
            "how long the VM's last successful backup took",
            vm,
            registry=self.registry,
        )
        self.bytes_read = Gauge(
            "genievm_backup_read_bytes", "bytes the VM's last successful backup read", vm, registry=self.registry
        )
        self.bytes_stored = Gauge(
            "genievm_backup_stored_bytes",
            "bytes the VM's last successful backup wrote to storage",
            vm,
            registry=self.registry,
        )
        self.jobs = Counter(
            "genievm_jobs", "jobs this server ran, by kind and result", ["kind", "result"], registry=self.registry
        )
        queue = Gauge("genievm_scheduler_queue_length", "scheduled runs waiting to start", registry=self.registry)
        queue.set_function(queue_length)

    def job_ended(self, job: Job) -> None:
        self.jobs.labels(job.kind, job.state.value).inc()
        if job.kind == "backup" and job.state is JobState.SUCCEEDED and job.vm and job.finished_at:
            started = job.started_at or job.finished_at
            stats = (job.result or {}).get("stats", {})
            self.last_success.labels(job.vm).set(job.finished_at.timestamp())
            self.duration.labels(job.vm).set((job.finished_at - started).total_seconds())
            self.bytes_read.labels(job.vm).set(stats.get("bytes_read", 0))
            self.bytes_stored.labels(job.vm).set(stats.get("bytes_stored", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
