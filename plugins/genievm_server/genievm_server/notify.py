"""Notifications: a JSON POST to each configured webhook when a job ends as it asks for (failure, success)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import structlog

from genievm_core.jobs import Job, JobState
from genievm_server.settings import WebhookSettings

__all__ = ["Notifier"]

log = structlog.get_logger("genievm.server")
TIMEOUT = 10.0


class Notifier:
    def __init__(self, webhooks: tuple[WebhookSettings, ...]) -> None:
        self.webhooks = webhooks

    def job_ended(self, job: Job) -> None:
        event = "success" if job.state is JobState.SUCCEEDED else "failure"
        if job.state is JobState.CANCELLED:
            return
        body = {
            "event": f"job.{event}",
            "job": {
                "id": job.id,
                "kind": job.kind,
                "state": job.state.value,
                "vm": job.vm,
                "repository": job.repository,
                "error": job.error,
                "exit_code": job.exit_code,
                "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            },
        }
        for hook in self.webhooks:
            if event in hook.on:  # sent from a thread of its own: a slow receiver never holds up a job
                threading.Thread(target=_post, args=(hook.url, body), name="genievm-webhook", daemon=True).start()


def _post(url: str, body: dict[str, Any]) -> None:
    try:
        httpx.post(url, json=body, timeout=TIMEOUT).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("webhook.failed", url=url, error=str(exc))
