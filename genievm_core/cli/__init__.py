"""The ``genievm`` command: a typer app over whatever plugins are installed.

Exit codes are those of ``genievm_core.errors`` (docs/errors.md); usage errors
exit 2, an interrupt 130. A GenieVMError is one line on stderr, never a
traceback; so is a number outside its option's range (``check_ranges``, exit 3).
"""

from __future__ import annotations

import gc
import importlib
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from genievm_core.choices import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    LOCK_STALE_AFTER,
    MAX_SECONDS,
    PASSPHRASE_ENV,
    REPO_ENV,
    LogFormat,
    LogLevel,
)
from genievm_core.errors import ConfigError, GenieVMError
from genievm_core.interrupts import raise_on

if TYPE_CHECKING:
    from typer import _click as click  # the click typer vendors (its types; nothing imported at run time)

__all__ = ["COMMANDS", "app", "check_ranges", "load_command", "main", "numeric_params"]

_debug = False

# Each command: its module under genievm_core.cli, the attribute (a Typer app or a command function) and the
# summary `genievm --help` lists. A module is imported only when its command runs or shows its own help, so
# `genievm --help` and `--version` import no plugin, no pydantic model, no engine (benchmarks/startup.py).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "repo": ("repo", "app", "Create, copy, upgrade and unlock repositories; manage their keys."),
    "backups": ("backups", "app", "List, show and forget backups."),
    "jobs": ("jobs", "app", "List, show, watch, pause, resume, cancel and limit jobs."),
    "backup": ("transfer", "backup", "Back up a VM into a repository (incremental when it has a parent)."),
    "restore": ("transfer", "restore", "Restore a backup: its disks, and the VM where the provider can define one."),
    "verify": (
        "verify", "verify", "Check backups: indexes and chunk presence, or every chunk's data with --read-data."
    ),
    "prune": ("prune", "prune", "Delete the backups the retention rules do not keep, then the chunks no backup needs."),
    "gc": ("prune", "gc", "Delete the chunks and indexes no backup needs (after the grace period)."),
    "plugins": ("plugins", "plugins", "List the plugins: name, distribution, version and what each registers."),
    "vms": ("vms", "vms", "List the VMs of a provider: id, name and state."),
}

_BUILTIN = frozenset(COMMANDS)


def load_command(name: str) -> click.Command:
    """The click command ``name`` of ``COMMANDS``, its module imported now."""
    module, attribute, _summary = COMMANDS[name]
    return _as_command(name, getattr(importlib.import_module(f"genievm_core.cli.{module}"), attribute))


def _as_command(name: str, target: Any) -> click.Command:
    """A typer command function or ``typer.Typer`` as the click command ``name``."""
    holder = typer.Typer()
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    return _with_ranges(typer.main.get_group(holder).commands[name])


def _with_ranges(command: click.Command) -> click.Command:
    """``command`` and its subcommands with the one-line range check of their numeric options."""
    check_ranges(command)
    for sub in getattr(command, "commands", {}).values():
        _with_ranges(sub)
    return command


# numeric options out of their range: one line and the bad-input exit code

_Param = TyperOption | TyperArgument


def numeric_params(command: click.Command) -> list[_Param]:
    """The parameters of ``command`` (not of its subcommands) that take one int or float."""
    found = []
    for param in command.params:
        if isinstance(param, _Param) and param.type_descriptor.annotation in (int, float) and not param.multiple:
            if not (isinstance(param, TyperOption) and param.count):
                found.append(param)
    return found


def range_text(low: float | None, high: float | None) -> str:
    """``1 to 256``, ``at least 0.05``, ``at most 100``."""

    def number(value: float) -> str:
        return str(int(value)) if float(value).is_integer() else f"{value:g}"

    if low is not None and high is not None:
        return f"{number(low)} to {number(high)}"
    return f"at least {number(low)}" if low is not None else f"at most {number(high or 0)}"


def check_ranges(command: click.Command) -> click.Command:
    """Give each ranged numeric parameter of ``command`` the one-line check; ``command`` itself returned.

    Every numeric option (and argument) of every command declares its range with typer's ``min``/``max``
    (tests/test_option_ranges.py walks the command tree for ones that do not). A value out of that range, or
    a float that is not finite, is then a ``ConfigError`` (exit 3, ``genievm: error: invalid configuration:
    --workers: -3 is out of range (1 to 256)``) instead of typer's usage message (exit 2), wherever it came
    from: the command line, an environment variable or a default. What is not a number stays a usage error.
    """
    for param in numeric_params(command):
        if (param.min is not None or param.max is not None) and not getattr(param, "_genievm_checked", False):
            param.process_value = _range_checked(param, param.process_value)  # type: ignore[method-assign,assignment]
            param._genievm_checked = True  # type: ignore[union-attr]
    return command


def _range_checked(param: _Param, process: Callable[[click.Context, Any], Any]) -> Callable[[click.Context, Any], Any]:
    kind = param.type_descriptor.annotation
    low, high = param.min, param.max

    def process_value(ctx: click.Context, value: Any) -> Any:
        try:
            number = kind(value) if value is not None else None
        except (TypeError, ValueError):
            number = None  # not a number: typer's usage error says so
        if number is not None and not math.isfinite(number):
            raise ConfigError(f"invalid configuration: {_name(ctx, param)}: {value} is not a finite number")
        if number is not None and ((low is not None and number < low) or (high is not None and number > high)):
            raise ConfigError(
                f"invalid configuration: {_name(ctx, param)}: {value} is out of range ({range_text(low, high)})"
            )
        return process(ctx, value)

    return process_value


def _name(ctx: click.Context, param: _Param) -> str:
    """How the user gave the value: ``--workers``, ``GENIEVM_STORAGE_ATTEMPTS`` or the argument's name."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    if source is not None and source.name == "ENVIRONMENT" and param.envvar:
        return param.envvar if isinstance(param.envvar, str) else param.envvar[0]
    if isinstance(param, TyperOption):
        longs = [opt for opt in param.opts if opt.startswith("--")]
        return (longs or param.opts)[0]
    return (param.name or "value").upper()


def plugin_commands(builtin: frozenset[str]) -> dict[str, str]:
    from genievm_core.cli import extra  # importlib.metadata, about 20 ms: only to list or run a plugin's command

    return extra.plugin_commands(builtin)


def load_plugin_command(name: str) -> click.Command:
    from genievm_core.cli import extra

    return _as_command(name, extra.load_plugin_command(name))


class _LazyGroup(TyperGroup):
    """The root command: lists ``COMMANDS`` by their summaries and imports a command's module when it is used."""

    _summaries_only = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _with_ranges(self)  # the root's own options (--storage-attempts, ...)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS) + sorted(plugin_commands(_BUILTIN))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        extra = plugin_commands(_BUILTIN) if cmd_name not in COMMANDS else {}
        if cmd_name not in COMMANDS and cmd_name not in extra:
            return None
        if cmd_name not in self.commands:
            if self._summaries_only:  # the root's --help: the summary, not the command
                summary = COMMANDS[cmd_name][2] if cmd_name in COMMANDS else f"(from {extra[cmd_name]})"
                return TyperCommand(cmd_name, help=summary)
            self.commands[cmd_name] = load_command(cmd_name) if cmd_name in COMMANDS else load_plugin_command(cmd_name)
        return self.commands[cmd_name]

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._summaries_only = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._summaries_only = False

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in COMMANDS and args[0] not in plugin_commands(_BUILTIN):  # a typo: "Did you mean ..."
            self.commands.update({name: load_command(name) for name in COMMANDS if name not in self.commands})
        elif args and args[0] in OPEN_REPOSITORIES:
            _derive_key_ahead(ctx.params, args[1:])
        return super().resolve_command(ctx, args)


OPEN_REPOSITORIES = frozenset({"backup", "restore", "backups", "verify", "prune", "gc"})  # with --repo


def _derive_key_ahead(root: dict[str, Any], words: list[str]) -> None:
    """Start scrypt for the repository a command names by ``--repo`` (or GENIEVM_BACKUP_PATH) with the passphrase
    of GENIEVM_PASSPHRASE, before the command's modules import (about 0.15 s on one CPU, while scrypt runs on
    the other): a guess from the raw words, which ``genievm_core.key_ahead`` turns into a key only for a local
    repository, and the open takes only if it would derive the very same one."""
    secret = os.environ.get(PASSPHRASE_ENV)
    if not secret or root.get("passphrase_command") or root.get("key_file"):
        return
    words = words[: words.index("--")] if "--" in words else words
    if "--help" in words or any(w == "--passphrase-file" or w.startswith("--passphrase-file=") for w in words):
        return
    repo = next((w.partition("=")[2] for w in words if w.startswith("--repo=")), None)
    if repo is None and "--repo" in words[:-1]:
        repo = words[words.index("--repo") + 1]
    repo = repo or os.environ.get(REPO_ENV)
    if repo:
        from genievm_core import key_ahead

        key_ahead.start_for_local(repo, secret)


app = typer.Typer(
    name="genievm",
    help="Back up and restore whole virtual machines.",
    cls=_LazyGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _print_version(value: bool) -> None:
    """``genievm --version``: the core's version, then each plugin distribution's, with its plugins.

    Read from the installed metadata (entry points), so no plugin is imported: it answers in a fifth of a second.
    """
    if not value:
        return
    from importlib.metadata import entry_points, version


    lines = [f"genievm-core {version('genievm-core')}"]
    by_distribution: dict[tuple[str, str], list[str]] = {}
    if not os.environ.get(DISABLE_AUTOLOAD_ENV):
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = (ep.dist.name, ep.dist.version) if ep.dist else ("?", "?")
            by_distribution.setdefault(dist, []).append(ep.name)
    for (distribution, dist_version), names in sorted(by_distribution.items()):
        lines.append(f"{distribution} {dist_version} ({', '.join(sorted(names))})")
    sys.stdout.write("\n".join(lines) + "\n")
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
            max=MAX_SECONDS,
            metavar="SECONDS",
            envvar="GENIEVM_LOCK_STALE_AFTER",
            help="a lock of another host not refreshed for this long is stale (locks are refreshed every sixth)",
        ),
    ] = LOCK_STALE_AFTER,
    passphrase_command: Annotated[
        str | None,
        typer.Option(
            metavar="COMMAND",
            envvar="GENIEVM_PASSPHRASE_COMMAND",
            help="run COMMAND (no shell) and read the passphrase from its output, e.g. 'pass show genievm'",
        ),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            envvar="GENIEVM_KEY_FILE",
            help="open repositories with this key file (made by `repo key export`), not a passphrase",
        ),
    ] = None,
) -> None:
    from genievm_core.cli.common import State, parse_storage_options
    from genievm_core.engine.memory import tune_allocator
    from genievm_core.logging import configure_logging

    global _debug
    _debug = log_level is LogLevel.DEBUG
    tune_allocator()
    if _collecting_after_start_up:
        gc.freeze()  # what start-up made lives as long as the process: no later collection walks it
        gc.enable()
    configure_logging(log_level.value, log_format)
    ctx.obj = State(
        disabled_plugins=list(disable_plugin or []),
        storage_options=parse_storage_options(storage_option),
        job_db=job_db,
        storage_attempts=storage_attempts,
        lock_stale_after=lock_stale_after,
        passphrase_command=passphrase_command,
        key_file=key_file,
    )
    ctx.call_on_close(ctx.obj.close)


def _say(line: str) -> None:
    from genievm_core.cli.common import err_console  # imported on the way out: it brings in the library API

    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def _json_error(exc: Exception, exit_code: int, message: str) -> None:
    """Under ``--json``, the error as JSON on stdout too (the line on stderr stays)."""
    from genievm_core.cli.common import emit_json, error_format

    if error_format.json and not error_format.result_printed:
        emit_json({"error": {"code": type(exc).__name__, "exit": exit_code, "message": message}})


_collecting_after_start_up = False  # run() turned the collector off for the start-up


def run() -> None:
    """The ``genievm`` command: ``main`` in a process of its own.

    Start-up (typer, pydantic's models, the library API, the plugins) makes some fifty thousand
    objects that live until the process ends, and the cyclic collector walked them over and over
    while they were made, then once more at exit: about 0.1 s of every command
    (docs/performance.md, "Start-up"). The collector is off until the root command has loaded
    (its objects are then frozen: set aside from every later collection) and the survivors are
    frozen again on the way out, so the exit's collection has nothing to walk.
    """
    global _collecting_after_start_up
    gc.disable()
    _collecting_after_start_up = True
    try:
        main()
    finally:
        gc.freeze()


def main() -> None:
    common = sys.modules.get("genievm_core.cli.common")
    if common is not None:  # a second run in this process (the tests): forget the last run's --json
        common.error_format.json = common.error_format.result_printed = False
    raise_on((signal.SIGINT, signal.SIGTERM))  # stop between chunks and clean up, with one line
    try:
        # the click command itself: Typer's own __call__ sets an attribute on every escaping exception,
        # which SDK errors that refuse new attributes (pyVmomi's faults) turn into an AttributeError
        typer.main.get_command(app)(prog_name="genievm", standalone_mode=True)
    except GenieVMError as exc:
        _say(f"genievm: error: {exc}")
        _json_error(exc, exc.exit_code, str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _say("genievm: interrupted")
        sys.exit(130)
    except Exception as exc:
        from genievm_core.logging import get_logger

        get_logger("genievm").debug("internal_error", exc_info=True)
        _say(f"genievm: internal error: {type(exc).__name__}: {exc} (run with --log-level debug for the traceback)")
        _json_error(exc, 1, f"internal error: {type(exc).__name__}: {exc}")
        if _debug:
            raise
        sys.exit(1)
