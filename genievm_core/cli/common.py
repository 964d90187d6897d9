"""What every command shares: the library API object (``State``), options, output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from genievm_core.api import REPO_ENV, GenieVM, passphrase_source
from genievm_core.choices import MAX_SECONDS
from genievm_core.engine import DiskProgress
from genievm_core.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

__all__ = [
    "ConfigFileOption",
    "JsonOption",
    "LockWaitOption",
    "NoLockOption",
    "PassphraseFileOption",
    "RepoOption",
    "State",
    "disk_progress",
    "emit_json",
    "error_format",
    "human_rate",
    "human_size",
    "parse_storage_options",
    "passphrase_source",
    "plural",
    "ratio",
    "repository_argument",
    "state",
]

RepoOption = Annotated[
    str | None,
    typer.Option("--repo", metavar="URL", help=f"repository path or URL (backupPath; or {REPO_ENV})"),
]
LockWaitOption = Annotated[
    float,
    typer.Option(
        "--lock-wait", min=0, max=MAX_SECONDS, metavar="SECONDS", help="seconds to wait for a conflicting lock to go"
    ),
]
PassphraseFileOption = Annotated[
    Path | None, typer.Option(help="file holding the repository passphrase", metavar="PATH")
]


class _ErrorFormat:
    """Whether the command was given ``--json``: its error, if any, is then printed as JSON too, unless it
    has printed its result already (``verify``'s reports before its exit 22): stdout holds one JSON document."""

    json = False
    result_printed = False


error_format = _ErrorFormat()


def _note_json(value: bool) -> bool:
    error_format.json = error_format.json or value
    return value


JsonOption = Annotated[
    bool, typer.Option("--json", help="print the result as JSON (an error too, on stdout)", callback=_note_json)
]
NoLockOption = Annotated[
    bool,
    typer.Option(
        "--no-lock",
        help="read without the shared lock (read-only storage); automatic when the storage refuses writes",
    ),
]
ConfigFileOption = Annotated[Path | None, typer.Option("--config", "-c", help="JSON job config", metavar="PATH")]
ProviderOptionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--provider-option",
        "-o",
        help="KEY=VALUE for providerOptions, e.g. uri=qemu:///system (repeatable)",
        metavar="KEY=VALUE",
    ),
]


def provider_options(base: dict[str, Any], values: list[str] | None) -> dict[str, Any]:
    """``base`` (the config's providerOptions) with ``--provider-option KEY=VALUE`` pairs on top."""
    out = dict(base)
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise ConfigError(f"invalid configuration: --provider-option: {value!r} is not KEY=VALUE")
        out[key] = val
    return out


class LazyConsole:
    """A rich ``Console``, made (and rich imported, about 20 ms) when first used: a command that prints
    nothing through it, such as a backup with ``--json``, never imports rich."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            if self._stderr:
                self._console = Console(stderr=True, soft_wrap=True)
            else:  # piped output is not cut to 80 columns: backup ids must survive `genievm backups list | grep`
                self._console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
        return self._console

    @property
    def is_terminal(self) -> bool:
        """rich's answer, without importing rich for a stream that is no terminal and no variable that rich
        reads to force one (a backup run by cron, a service or a benchmark draws no bars)."""
        if self._console is None and not (_FORCING & os.environ.keys()) and not _isatty(self._stderr):
            return False
        return bool(self.get().is_terminal)

    def line(self, text: str) -> None:
        """``text`` as it is (no markup, emoji or highlighting), and a newline: written straight to the stream
        when it is no terminal, so that a backup's or a restore's summary does not import rich (50 ms)."""
        if self.is_terminal:
            self.get().print(text, markup=False, emoji=False, highlight=False)
        else:
            stream = sys.stderr if self._stderr else sys.stdout
            stream.write(text + "\n")
            stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


_FORCING = {"FORCE_TERMINAL", "TTY_COMPATIBLE", "FORCE_COLOR"}  # the variables that make rich see a terminal


def _isatty(stderr: bool) -> bool:
    try:
        return (sys.stderr if stderr else sys.stdout).isatty()
    except ValueError:  # closed: no terminal any more
        return False


err_console = LazyConsole(stderr=True)
out_console = LazyConsole(stderr=False)


class State(GenieVM):
    """The library API object of one command, made from the options given before it.

    Warnings (an unencrypted repository, ...) go to stderr, once each.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(on_warning=_print_warning, **options)


def _print_warning(warning: str) -> None:
    err_console.print(f"genievm: warning: {warning}", highlight=False, markup=False)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def repository_argument(positional: str | None, option: str | None) -> str | None:
    """The repository given as the argument or as ``--repo`` (None: ``GENIEVM_BACKUP_PATH``, checked later)."""
    if positional is not None and option is not None and positional != option:
        raise ConfigError(
            f"invalid configuration: --repo: {option!r} and the argument {positional!r} name two repositories"
        )
    return positional if positional is not None else option


def parse_storage_options(values: list[str] | None) -> dict[str, str]:
    """``--storage-option KEY=VALUE`` (repeatable) as a mapping; values stay strings for the plugin to check."""
    options = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():  # not echoed: it may be a secret given without its key
            raise ConfigError("invalid configuration: --storage-option: give KEY=VALUE")
        options[key.strip()] = text
    return options


def emit_json(data: Any) -> None:
    error_format.result_printed = True
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def disk_progress(enabled: bool) -> Iterator[Any]:
    """A progress callback drawing one bar per disk on a terminal; a no-op otherwise."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bars = Progress(
        TextColumn("[bold]{task.fields[disk]}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console.get(),
    )
    tasks: dict[str, TaskID] = {}

    def update(p: DiskProgress) -> None:
        if p.disk not in tasks:
            tasks[p.disk] = bars.add_task(p.disk, total=p.total, disk=p.disk)
        bars.update(tasks[p.disk], completed=p.scanned)

    with bars:
        yield update


def human_size(n: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_rate(n: float, seconds: float) -> str:
    """``n`` bytes in ``seconds`` in the units of ``human_size``: ``6.7 MiB/s``."""
    return f"{human_size(n / seconds)}/s" if seconds > 0 else "-"


def ratio(whole: float, part: float) -> str:
    """``whole / part`` as ``2.50x``; ``-`` when ``part`` is 0 (nothing to compare)."""
    return f"{whole / part:.2f}x" if part > 0 else "-"


def plural(n: int, noun: str) -> str:
    """``1 disk``, ``2 disks``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
