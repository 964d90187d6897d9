"""What every command shares: the plugin host, repository opening, passphrases, output."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from genievm_core.engine import DiskProgress
from genievm_core.errors import ConfigError, PassphraseRequiredError
from genievm_core.jobs import Job, JobManager, JobRegistry
from genievm_core.models.user_files import read_user_file, text_of
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import StorageTarget
from genievm_core.repository import Repository
from genievm_core.repository.retry import DEFAULT_ATTEMPTS, with_retries
from genievm_core.repository.storage import open_storage

__all__ = [
    "ConfigFileOption",
    "JsonOption",
    "NoLockOption",
    "PassphraseFileOption",
    "RepoOption",
    "State",
    "disk_progress",
    "emit_json",
    "human_size",
    "parse_storage_options",
    "passphrase_source",
    "state",
]

PASSPHRASE_ENV = "GENIEVM_PASSPHRASE"
REPO_ENV = "GENIEVM_BACKUP_PATH"
STORAGE_OPTIONS_ENV = "GENIEVM_STORAGE_OPTIONS"
MAX_PASSPHRASE = 4 << 10  # bytes of a passphrase file
RepoOption = Annotated[str | None, typer.Option("--repo", help=f"repository path or URL (backupPath; or {REPO_ENV})")]
PassphraseFileOption = Annotated[Path | None, typer.Option(help="file holding the repository passphrase")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the result as JSON")]
NoLockOption = Annotated[
    bool,
    typer.Option(
        "--no-lock",
        help="read without the shared lock (read-only storage); automatic when the storage refuses writes",
    ),
]
ConfigFileOption = Annotated[Path | None, typer.Option("--config", "-c", help="JSON job config")]
ProviderOptionOption = Annotated[
    list[str] | None,
    typer.Option("--provider-option", "-o", help="KEY=VALUE for providerOptions, e.g. uri=qemu:///system (repeatable)"),
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


err_console = Console(stderr=True, soft_wrap=True)
# piped output is not cut to 80 columns: backup ids must survive `genievm backups list | grep`
out_console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


@dataclass
class State:
    """Options given before the command, shared by all commands."""

    disabled_plugins: list[str] = field(default_factory=list)
    storage_options: dict[str, str] = field(default_factory=dict)  # --storage-option KEY=VALUE
    job_db: Path | None = None  # None: default_job_db()
    storage_attempts: int = DEFAULT_ATTEMPTS
    _host: PluginHost | None = None
    _registry: JobRegistry | None = None

    @property
    def host(self) -> PluginHost:
        if self._host is None:
            self._host = PluginHost(disabled=self.disabled_plugins)
        return self._host

    def open_storage(self, url: str, config_options: Mapping[str, Any] | None = None) -> StorageTarget:
        """The storage target for ``url``; its options layered as a job config's fields are.

        Lowest first: ``GENIEVM_STORAGE_OPTIONS`` (a JSON object), a job config's
        ``storageOptions`` (which already took that variable's place when set),
        then ``--storage-option KEY=VALUE``.
        """
        options = {**_storage_options_env(), **(config_options or {}), **self.storage_options}
        return open_storage(self.host, url, options)

    def open_repository(
        self,
        url: str | None,
        passphrase_file: Path | None,
        *,
        compression_level: int = 3,
        storage_options: Mapping[str, Any] | None = None,
        no_lock: bool = False,
    ) -> Repository:
        """The repository at ``url``; with ``no_lock`` its reads take no lock (``--no-lock``)."""
        storage = self.open_storage(_require_repo(url), storage_options)
        storage = with_retries(storage, self.storage_attempts)
        repository = Repository.open(
            storage, passphrase=passphrase_source(passphrase_file), compression_level=compression_level
        )
        repository.lock_reads = not no_lock
        return repository

    @property
    def registry(self) -> JobRegistry:
        if self._registry is None:
            self._registry = JobRegistry(self.job_db)
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def run_job(self, job: Job, progress: Callable[[DiskProgress], None] | None = None) -> Job:
        """Run ``job`` in the foreground, recorded in the job registry; raise its error when it fails.

        Other processes can see, pause, resume and cancel it through the registry meanwhile.
        """
        job.extra_progress = progress
        with JobManager(self.registry) as manager:
            return manager.run(job)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def parse_storage_options(values: list[str] | None) -> dict[str, str]:
    """``--storage-option KEY=VALUE`` (repeatable) as a mapping; values stay strings for the plugin to check."""
    options = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():  # not echoed: it may be a secret given without its key
            raise ConfigError("invalid configuration: --storage-option: give KEY=VALUE")
        options[key.strip()] = text
    return options


def _storage_options_env() -> dict[str, Any]:
    text = os.environ.get(STORAGE_OPTIONS_ENV)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(f"invalid configuration: {STORAGE_OPTIONS_ENV}: not a JSON object")
    return value


def _require_repo(url: str | None) -> str:
    url = url or os.environ.get(REPO_ENV)
    if not url:
        raise ConfigError(f"invalid configuration: backupPath: give --repo or set {REPO_ENV}")
    return url


def passphrase_source(passphrase_file: Path | None, *, confirm: bool = False) -> Callable[[], str]:
    """A callable that returns the passphrase: from a file, the environment, or a prompt."""

    def get() -> str:
        if passphrase_file is not None:
            data = read_user_file(passphrase_file, what="passphrase file", limit=MAX_PASSPHRASE)
            passphrase = text_of(data, passphrase_file, what="passphrase file").rstrip("\n")
        elif os.environ.get(PASSPHRASE_ENV):
            passphrase = os.environ[PASSPHRASE_ENV]
        elif not sys.stdin.isatty():
            passphrase = ""
        else:
            passphrase = getpass.getpass("Repository passphrase: ")
            if passphrase and confirm and getpass.getpass("Repeat the passphrase: ") != passphrase:
                raise ConfigError("invalid configuration: passphrase: the two entries differ")
        if not passphrase:  # none, or an empty one from any source: the same case, the same line
            raise PassphraseRequiredError(
                f"a passphrase is needed: set {PASSPHRASE_ENV}, give a non-empty --passphrase-file, "
                "or run on a terminal"
            )
        return passphrase

    return get


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def disk_progress(enabled: bool) -> Iterator[Any]:
    """A progress callback drawing one bar per disk on a terminal; a no-op otherwise."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    bars = Progress(
        TextColumn("[bold]{task.fields[disk]}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
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
