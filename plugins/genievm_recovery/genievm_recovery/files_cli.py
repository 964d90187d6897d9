"""``genievm files ls|get|find``: the files of a guest filesystem in a backup, through libguestfs over NBD."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from genievm_core.cli.common import (
    JsonOption,
    PassphraseFileOption,
    RepoOption,
    disk_progress,
    emit_json,
    err_console,
    human_size,
    out_console,
    plural,
    state,
)
from genievm_core.errors import ConfigError
from genievm_core.jobs import Job, default_job_db
from genievm_recovery.cli import _storage_options_env, chosen_disks, open_with_secret
from genievm_recovery.export import Export, cleanup_stale, exports_root
from genievm_recovery.files_job import FilesJob

__all__ = ["files"]

files = typer.Typer(
    help="List, find and restore single files of a guest filesystem in a backup (libguestfs, read-only).",
    no_args_is_help=True,
)

VmOption = Annotated[str | None, typer.Option("--vm", help="the VM (id or name) whose backup is read")]
BackupOption = Annotated[str, typer.Option("--backup", help="backup id or 'latest'")]
DiskOption = Annotated[list[str] | None, typer.Option("--disk", help="only this disk (repeatable); default: all")]
FilesystemOption = Annotated[
    str | None,
    typer.Option("--filesystem", help="the filesystem to read, as libguestfs names it (/dev/sda1, /dev/vg/lv)"),
]
PHASES = {"serve": "serving the backup's disks", "launch": "starting the libguestfs appliance (KVM, else TCG)",
          "mount": "finding and mounting the filesystem", "get": "extracting"}  # fmt: skip


@files.command("ls")
def ls(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="a folder (or a file) in the guest")] = "/",
    repo: RepoOption = None,
    vm: VmOption = None,
    backup_id: BackupOption = "latest",
    disk: DiskOption = None,
    filesystem: FilesystemOption = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List a folder of the guest: type, mode, size, modification time (UTC) and name."""
    job = _run(ctx, "ls", [path], repo, vm, backup_id, disk, filesystem, passphrase_file, json_output)
    if json_output:
        emit_json({**(job.result or {}), "entries": [e.as_json() for e in job.entries]})
        return
    table = Table("mode", Column("size", justify="right"), "modified", "name", box=None, pad_edge=False)
    for e in job.entries:
        name = f"{e.name} -> {e.link}" if e.link is not None else e.name
        table.add_row(_mode_text(e.type, e.mode), str(e.size), e.mtime.strftime("%Y-%m-%d %H:%M:%S"), name)
    out_console.print(table, markup=False, highlight=False)


@files.command("find")
def find(
    ctx: typer.Context,
    pattern: Annotated[str, typer.Argument(help="a shell pattern matched against names, as find -name: '*.conf'")],
    under: Annotated[str, typer.Option("--under", help="the folder searched")] = "/",
    repo: RepoOption = None,
    vm: VmOption = None,
    backup_id: BackupOption = "latest",
    disk: DiskOption = None,
    filesystem: FilesystemOption = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """The paths in the guest whose name matches PATTERN, one a line."""
    job = _run(ctx, "find", [under], repo, vm, backup_id, disk, filesystem, passphrase_file, json_output, pattern)
    if json_output:
        emit_json({**(job.result or {}), "paths": job.found})
        return
    for path in job.found:
        print(path)


@files.command("get")
def get(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="files and folders in the guest")],
    to: Annotated[Path, typer.Option("--to", help="the folder to write them into (made if missing)")],
    repo: RepoOption = None,
    vm: VmOption = None,
    backup_id: BackupOption = "latest",
    disk: DiskOption = None,
    filesystem: FilesystemOption = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Copy files and folders out of the guest into --to, each under its own name, with modes and times."""
    if to.exists() and not to.is_dir():
        raise ConfigError(f"invalid configuration: --to: {to} is not a folder")
    job = _run(ctx, "get", paths, repo, vm, backup_id, disk, filesystem, passphrase_file, json_output, target=to)
    result = job.result or {}
    if json_output:
        emit_json(result)
        return
    counts = [plural(result["files"], "file"), plural(result["folders"], "folder"), plural(result["links"], "link")]
    skipped = f", {result['skipped']} special files skipped" if result["skipped"] else ""
    print(f"restored {', '.join(counts)} ({human_size(result['bytes'])}) to {to}{skipped}")


def _run(
    ctx: typer.Context,
    action: str,
    paths: list[str],
    repo: str | None,
    vm: str | None,
    backup_id: str,
    disk: list[str] | None,
    filesystem: str | None,
    passphrase_file: Path | None,
    json_output: bool,
    pattern: str | None = None,
    target: Path | None = None,
) -> FilesJob:
    st = state(ctx)
    root = exports_root(st.job_db or default_job_db())
    st.jobs(limit=1)  # the registry marks jobs whose process died as failed
    cleanup_stale(root)
    if vm is None and backup_id == "latest":
        raise ConfigError("invalid configuration: --vm: give the VM whose backup is read (or --backup ID)")
    repository, secret = open_with_secret(ctx, repo, passphrase_file)
    manifest = repository.find_backup(vm, backup_id)
    export = Export(
        url=repository.url,
        backup=manifest,
        disks=chosen_disks(manifest, disk),
        folder=root,
        passphrase=secret,
        storage_options={**_storage_options_env(), **st.storage_options} or None,
    )
    job = FilesJob(repository, export, action, paths, filesystem=filesystem, pattern=pattern,
                   target=target.absolute() if target is not None else None)  # fmt: skip
    export.folder = root / job.id
    with _progress(job, enabled=not json_output) as bars:
        st.run(job, bars)
    return job


@contextmanager
def _progress(job: Job, *, enabled: bool) -> Iterator[Any]:
    """On a terminal: a line as each phase starts (the appliance takes seconds to tens of seconds), then a bar
    of the bytes extracted."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    shown: set[str] = set()

    def tell(j: Job) -> None:
        if j.phase in PHASES and j.phase not in shown:
            shown.add(j.phase)
            err_console.print(f"genievm: {PHASES[j.phase]}", markup=False, highlight=False)

    job.add_listener(tell)
    with disk_progress(True) as bars:
        yield bars


def _mode_text(kind: str, mode: int) -> str:
    letter = {"directory": "d", "symlink": "l", "char": "c", "block": "b", "fifo": "p", "socket": "s"}.get(kind, "-")
    return letter + stat.filemode(mode)[1:]
