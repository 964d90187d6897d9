"""The Celery application and its one task: the configuration that makes delivery safe, and a thin wrapper
that hands the job to the worker's ``WorkerRuntime`` (no business logic here).

- ``task_acks_late``: a job's message is acknowledged when the job has ended, not when it was received, so a
  worker that dies mid-job (SIGKILL, power loss) leaves it unacknowledged and the broker hands it to another
  worker once ``visibility_timeout`` has passed; ``task_reject_on_worker_lost`` does the same at once where a
  pool child dies under a living worker (the prefork pool).
- ``worker_prefetch_multiplier`` 1: a worker holds no more jobs than it runs, so the others take the rest.
- JSON only, for the messages and the results (Redis is also the result backend).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from genievm_worker.runner import WorkerRuntime

__all__ = ["RUN_JOB", "make_app", "runtime"]

RUN_JOB = "genievm.run_job"
_runtime: WorkerRuntime | None = None


def runtime(value: WorkerRuntime | None = None) -> WorkerRuntime:
    """The worker process's runtime (set once by ``genievm worker`` before it takes jobs)."""
    global _runtime
    if value is not None:
        _runtime = value
    if _runtime is None:
        raise RuntimeError("genievm.run_job runs only in a worker started by `genievm worker`")
    return _runtime


def run_job(task: Any, job_id: str) -> str | None:
    outcome = runtime().run(job_id)
    if outcome.retry_after is not None:  # its VM is busy or a cap is full: back on its queue for a while
        raise task.retry(countdown=outcome.retry_after, max_retries=None)
    return outcome.state


def make_app(broker: str, *, visibility_timeout: float = 3600.0, results: bool = True) -> Celery:
    """The application of a worker (``results``: it stores each job's outcome in Redis too) or of a submitter
    (which waits for no result: the outcome is in the shared job state)."""
    app = Celery("genievm", broker=broker, backend=broker if results else None, set_as_current=False)
    transport = {  # every worker looks for messages a dead worker left unacknowledged a few times per timeout
        "visibility_timeout": int(visibility_timeout),
        "unacked_restore_interval": max(1, min(60, int(visibility_timeout / 4))),
        "unacked_restore_throttle": 1,
        # the look's mutex: a worker killed while it held it must not stop the others looking for long
        "unacked_mutex_expire": max(5, min(300, int(visibility_timeout / 2))),
    }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        result_expires=7 * 24 * 3600,
        result_backend_always_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for a broker that is down
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,  # a running job finishes without the broker
        task_default_queue="genievm",
    )
    app.task(name=RUN_JOB, bind=True, max_retries=None)(run_job)
    return app
