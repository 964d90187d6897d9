"""structlog set-up, done once by the CLI (never at import), and the loggers modules log through.

Events are key/value pairs on stderr, as console lines or JSON. Any value
whose key names a secret is replaced before it is rendered.

structlog, with the rich tracebacks its console renderer brings in, takes about 50 ms to import: a
twentieth of an incremental backup. So modules log through ``get_logger``, whose loggers import it
only for an event the configured level lets through; until then ``configure_logging`` only notes
the level and format. A backup that logs nothing at its level never imports it. Without
``configure_logging`` (the library used on its own), every event goes to structlog, as configured
by the caller or by structlog's defaults.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from genievm_core.choices import LogFormat, LogLevel

if TYPE_CHECKING:
    import structlog

__all__ = [
    "LogFormat",
    "LogLevel",
    "Logger",
    "bound",
    "configure_logging",
    "get_logger",
    "redact_secrets",
    "redact_url",
    "reset_logging",
]

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
    import structlog

    return structlog.PrintLogger(sys.stderr)


# (least severe level shown, format) from configure_logging; applied to structlog once structlog is imported
_settings: tuple[int, str] | None = None
_applied = False
_bound: ContextVar[dict[str, Any] | None] = ContextVar("genievm_log_bound", default=None)


def configure_logging(level: str = "warning", fmt: Literal["console", "json"] | LogFormat = "console") -> None:
    """Events from ``level`` up on stderr, as console lines or JSON (``fmt``); structlog is set up now if it
    is imported already, else when the first event at that level comes."""
    global _settings, _applied
    _settings, _applied = (LEVELS.get(level.lower(), logging.WARNING), str(getattr(fmt, "value", fmt))), False
    if "structlog" in sys.modules:
        _apply()


def reset_logging() -> None:
    """Forget ``configure_logging`` (the tests' in-process CLI runs); structlog back to its defaults."""
    global _settings, _applied
    _settings, _applied = None, False
    if "structlog" in sys.modules:
        sys.modules["structlog"].reset_defaults()


def _apply() -> None:
    global _applied
    import structlog

    if _settings is None or _applied:
        return
    threshold, fmt = _settings
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
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    _applied = True


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """``values`` added to every event logged in this context (a job's id): by ``get_logger``'s loggers, and by
    structlog's own where structlog is imported already (a plugin that uses it directly)."""
    token = _bound.set({**(_bound.get() or {}), **values})
    try:
        if "structlog" in sys.modules:
            with sys.modules["structlog"].contextvars.bound_contextvars(**values):
                yield
        else:
            yield
    finally:
        _bound.reset(token)


class Logger:
    """A module's logger (``get_logger``): structlog's, imported on the first event the configured level shows."""

    __slots__ = ("name",)

    def __init__(self, name: str | None) -> None:
        self.name = name

    def debug(self, event: str, **values: Any) -> None:
        self._log(logging.DEBUG, "debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._log(logging.INFO, "info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._log(logging.WARNING, "warning", event, values)

    def error(self, event: str, **values: Any) -> None:
        self._log(logging.ERROR, "error", event, values)

    def _log(self, level: int, method: str, event: str, values: dict[str, Any]) -> None:
        if _settings is not None and level < _settings[0]:
            return  # below what is shown: structlog's filtering bound logger would drop it too
        import structlog

        if not _applied:
            _apply()
        extra = _bound.get()
        getattr(structlog.get_logger(self.name), method)(event, **(extra | values if extra else values))


def get_logger(name: str | None = None) -> Logger:
    """The logger of a module: ``log = get_logger("genievm.engine")``."""
    return Logger(name)
