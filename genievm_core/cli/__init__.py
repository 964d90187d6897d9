"""The ``genievm`` command: a typer app over whatever plugins are installed.

Exit codes are those of ``genievm_core.errors`` (docs/errors.md); usage errors
exit 2, an interrupt 130. A GenieVMError is one line on stderr, never a
traceback.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import structlog
import typer

from genievm_core import __version__
from genievm_core.cli import backups, jobs, plugins, prune, repo, transfer, verify, vms
from genievm_core.cli.common import State, emit_json, err_console, error_format, out_console, parse_storage_options
from genievm_core.engine.memory import tune_allocator
from genievm_core.errors import GenieVMError, JobInterruptedError
from genievm_core.logging import LogFormat, LogLevel, configure_logging
from genievm_core.plugin import PluginHost
from genievm_core.repository.lock import STALE_AFTER

__all__ = ["app", "main"]

_debug = False
app = typer.Typer(
    name="genievm",
    help="Back up and restore whole virtual machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
app.add_typer(repo.app, name="repo")
app.add_typer(backups.app, name="backups")
app.add_typer(jobs.app, name="jobs")
app.command("backup")(transfer.backup)
app.command("restore")(transfer.restore)
app.command("verify")(verify.verify)
app.command("prune")(prune.prune)
app.command("gc")(prune.gc)
app.command("plugins")(plugins.plugins)
app.command("vms")(vms.vms)


def _print_version(value: bool) -> None:
    """``genievm --version``: the core's version, then each plugin distribution's, with its plugins."""
    if not value:
        return
    lines = [f"genievm-core {__version__}"]
    by_distribution: dict[tuple[str, str], list[str]] = {}
    for info in PluginHost().plugins():
        if info.distribution != "genievm-core":
            by_distribution.setdefault((info.distribution, info.version), []).append(info.name)
    for (distribution, version), names in sorted(by_distribution.items()):
        lines.append(f"{distribution} {version} ({', '.join(sorted(names))})")
    out_console.print("\n".join(lines), highlight=False, markup=False)
    raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            envvar="GENIEVM_LOG_LEVEL",
            case_sensitive=False,
            help="the least severe events logged on stderr",
            metavar="LEVEL",
        ),
    ] = LogLevel.WARNING,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            envvar="GENIEVM_LOG_FORMAT",
            case_sensitive=False,
            help="log lines as console text or JSON",
            metavar="FORMAT",
        ),
    ] = LogFormat.CONSOLE,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="show the versions of GenieVM and its plugins"
        ),
    ] = False,
    disable_plugin: Annotated[
        list[str] | None, typer.Option("--disable-plugin", help="do not load this plugin (repeatable)", metavar="NAME")
    ] = None,
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            "--storage-option",
            metavar="KEY=VALUE",
            help="storage target option, e.g. endpoint_url=https://s3.example (repeatable; or GENIEVM_STORAGE_OPTIONS)",
        ),
    ] = None,
    job_db: Annotated[
        Path | None,
        typer.Option(
            envvar="GENIEVM_JOB_DB",
            help="job registry, SQLite (default ~/.local/state/genievm/jobs.sqlite)",
            metavar="PATH",
        ),
    ] = None,
    storage_attempts: Annotated[
        int,
        typer.Option(
            min=1,
            max=100,
            envvar="GENIEVM_STORAGE_ATTEMPTS",
            help="tries of a storage operation that fails",
            metavar="N",
        ),
    ] = 5,
    lock_stale_after: Annotated[
        float,
        typer.Option(
            min=1,
            metavar="SECONDS",
            envvar="GENIEVM_LOCK_STALE_AFTER",
            help="a lock of another host not refreshed for this long is stale (locks are refreshed every sixth)",
        ),
    ] = STALE_AFTER,
    passphrase_command: Annotated[
        str | None,
        typer.Option(
            metavar="COMMAND",
            envvar="GENIEVM_PASSPHRASE_COMMAND",
            help="run COMMAND (no shell) and read the passphrase from its output, e.g. 'pass show genievm'",
        ),
    ] = None,
) -> None:
    global _debug
    _debug = log_level is LogLevel.DEBUG
    configure_logging(log_level.value, log_format)
    ctx.obj = State(
        disabled_plugins=list(disable_plugin or []),
        storage_options=parse_storage_options(storage_option),
        job_db=job_db,
        storage_attempts=storage_attempts,
        lock_stale_after=lock_stale_after,
        passphrase_command=passphrase_command,
    )
    ctx.call_on_close(ctx.obj.close)


def _interrupt(signum: int, _frame: object) -> None:
    raise JobInterruptedError(f"interrupted by {signal.Signals(signum).name}")


def _json_error(exc: Exception, exit_code: int, message: str) -> None:
    """Under ``--json``, the error as JSON on stdout too (the line on stderr stays)."""
    if error_format.json and not error_format.result_printed:
        emit_json({"error": {"code": type(exc).__name__, "exit": exit_code, "message": message}})


def main() -> None:
    error_format.json = error_format.result_printed = False
    tune_allocator()
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop between chunks and clean up, with one line
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _interrupt)
    try:
        # the click command itself: Typer's own __call__ sets an attribute on every escaping exception,
        # which SDK errors that refuse new attributes (pyVmomi's faults) turn into an AttributeError
        typer.main.get_command(app)(prog_name="genievm", standalone_mode=True)
    except GenieVMError as exc:
        err_console.print(f"genievm: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        _json_error(exc, exc.exit_code, str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("genievm: interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        structlog.get_logger("genievm").debug("internal_error", exc_info=True)
        err_console.print(
            f"genievm: internal error: {type(exc).__name__}: {exc} (run with --log-level debug for the traceback)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        _json_error(exc, 1, f"internal error: {type(exc).__name__}: {exc}")
        if _debug:
            raise
        sys.exit(1)
