"""Notifications: a JSON POST to each configured webhook, an e-mail through each configured SMTP server,
when a job ends as it asks for (failure, success). Each is sent from a thread of its own: a slow receiver
never holds up a job. A webhook that does not answer, or answers 5xx or 429, is tried again a bounded number of
times with exponential back-off; then, like an e-mail that fails, it is logged (never a password)."""

from __future__ import annotations

import smtplib
import threading
import time
from email.message import EmailMessage
from typing import Any

import httpx

from genievm_core.jobs import Job, JobState
from genievm_core.logging import get_logger
from genievm_server.settings import EmailSettings, WebhookSettings

__all__ = ["Notifier"]

log = get_logger("genievm.server")
TIMEOUT = 10.0


class Notifier:
    def __init__(self, webhooks: tuple[WebhookSettings, ...], email: tuple[EmailSettings, ...] = ()) -> None:
        self.webhooks = webhooks
        self.email = email

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
            if event in hook.on:
                threading.Thread(target=_post, args=(hook, body), name="genievm-webhook", daemon=True).start()
        for mail in self.email:
            if event in mail.on:
                threading.Thread(target=_mail, args=(mail, body), name="genievm-email", daemon=True).start()


def _post(hook: WebhookSettings, body: dict[str, Any]) -> None:
    delay = hook.backoff
    for attempt in range(1, hook.retries + 2):
        try:
            answer = httpx.post(hook.url, json=body, timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            error, again = str(exc), True
        else:
            if answer.is_success:
                return
            error, again = f"HTTP {answer.status_code}", answer.status_code >= 500 or answer.status_code == 429
        if not again or attempt > hook.retries:
            log.warning("webhook.failed", url=hook.url, attempts=attempt, error=error)
            return
        log.warning("webhook.retry", url=hook.url, attempt=attempt, error=error, delay=delay)
        time.sleep(delay)
        delay *= 2


def _mail(settings: EmailSettings, body: dict[str, Any]) -> None:
    job = body["job"]
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.to)
    outcome = "failed" if body["event"] == "job.failure" else "succeeded"
    message["Subject"] = f"GenieVM: {job['kind']} of {job['vm'] or job['repository']} {outcome}"
    lines = [f"{key}: {value}" for key, value in job.items() if value is not None]
    message.set_content("\n".join(lines) + "\n")
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=TIMEOUT) as smtp:
            if settings.starttls:
                smtp.starttls()
            if settings.username is not None:
                smtp.login(settings.username, settings.password() or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("email.failed", host=settings.host, port=settings.port, error=str(exc))
