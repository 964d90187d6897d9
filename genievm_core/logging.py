"""structlog set-up, done once by the CLI (never at import).

Events are key/value pairs on stderr, as console lines or JSON. Any value
whose key names a secret is replaced before it is rendered.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

from genievm_core.choices import LogFormat, LogLevel

__all__ = ["LogFormat", "LogLevel", "configure_logging", "redact_secrets", "redact_url"]


_SECRET_KEY = re.compile(r"pass(word|phrase)?|secret|token_key|api_key|credential|^key$", re.I)
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if _SECRET_KEY.search(key):
            event[key] = "***"
    return event


_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/@]*@")


def redact_url(url: str) -> str:
    """``url`` with the password of its user part replaced (``qemu+tcp://admin:***@host/system``), for messages."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    """A logger on the stderr of the moment, not of the set-up: one that was replaced and closed since (by a
    test's capture, say) is never written to."""
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "warning", fmt: Literal["console", "json"] | LogFormat = "console") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level.lower(), logging.WARNING)),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
