"""``genievm serve``: a backup's disks as NBD exports, until stopped (Ctrl-C, SIGTERM, ``genievm jobs cancel``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from genievm_core.api import PASSPHRASE_ENV, passphrase_source
from genievm_core.cli.common import PassphraseFileOption, RepoOption, err_console, state
from genievm_core.errors import BackupNotFoundError, ConfigError, JobCancelledError
from genievm_core.jobs import default_job_db
from genievm_core.models.config import MAX_MBPS
from genievm_core.models.manifest import BackupManifest
from genievm_core.repository import Repository
from genievm_recovery.export import Export, ServeJob, cleanup_stale, exports_root
from genievm_recovery.reader import DEFAULT_CACHE

__all__ = ["serve"]


def serve(
    ctx: typer.Context,
    repo: RepoOption = None,
    vm: Annotated[str | None, typer.Option("--vm", help="VM (id or name) whose backup is served")] = None,
    backup_id: Annotated[str, typer.Option("--backup", help="backup id or 'latest'")] = "latest",
    disk: Annotated[list[str] | None, typer.Option("--disk", help="serve only this disk (repeatable)")] = None,
    socket: Annotated[Path | None, typer.Option("--socket", help="unix socket to listen on")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="TCP port on 127.0.0.1")] = None,
    writable: Annotated[
        bool, typer.Option("--writable", help="accept writes into a local overlay (the repository never changes)")
    ] = False,
    keep_overlay: Annotated[
        Path | None,
        typer.Option("--keep-overlay", help="with --writable: save what was written there, as qcow2, at the end"),
    ] = None,
    cache_mib: Annotated[
        int, typer.Option("--cache-mib", min=1, max=1 << 20, help="chunk cache size in MiB")
    ] = DEFAULT_CACHE >> 20,
    limit_read: Annotated[
        float | None,
        typer.Option(
            "--limit-read",
            min=0,
            max=MAX_MBPS,
            metavar="MBPS",
            envvar="GENIEVM_BANDWIDTH_LIMIT_READ",
            help="read at most this many MB/s of chunks from the repository, for all clients; 0: no limit",
        ),
    ] = None,
    cleanup: Annotated[
        bool, typer.Option("--cleanup", help="only remove what exports whose process died left behind")
    ] = False,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Serve a backup's disks over NBD (nbdkit), read-only unless --writable; one export per disk, named after it."""
    st = state(ctx)
    root = exports_root(st.job_db or default_job_db())
    st.jobs(limit=1)  # the registry marks jobs whose process died as failed
    removed = cleanup_stale(root)
    if cleanup:
        print(f"removed {len(removed)} stale exports")
        return
    if vm is None and backup_id == "latest":
        raise ConfigError("invalid configuration: --vm: give the VM whose backup is served (or --backup ID)")
    if socket is not None and port is not None:
        raise ConfigError("invalid configuration: --socket and --port: give one of them")
    repository, secret = open_with_secret(ctx, repo, passphrase_file)
    manifest = repository.find_backup(vm, backup_id)
    disks = chosen_disks(manifest, disk)
    if writable and len(disks) > 1:  # nbdkit 1.32's cow filter keeps one overlay for all exports
        raise ConfigError("invalid configuration: --writable: serves one disk; choose it with --disk")
    if keep_overlay is not None and not writable:
        raise ConfigError("invalid configuration: --keep-overlay: needs --writable")
    if keep_overlay is not None and keep_overlay.exists():
        raise ConfigError(f"invalid configuration: --keep-overlay: {keep_overlay} exists")
    export = Export(
        url=repository.url,
        backup=manifest,
        disks=disks,
        folder=root,
        socket=socket.absolute() if socket is not None else None,
        port=port,
        writable=writable,
        cache=cache_mib << 20,
        passphrase=secret,
        storage_options={**_storage_options_env(), **st.storage_options} or None,
        keep_overlay=keep_overlay.absolute() if keep_overlay is not None else None,
    )
    job = ServeJob(repository, export, on_ready=_announce, limit_read=limit_read)
    export.folder = root / job.id
    try:
        st.run(job)
    except JobCancelledError:
        err_console.print(f"genievm: export {job.id} stopped", markup=False, highlight=False)


def _announce(export: Export) -> None:
    lines = [f"job {export.folder.name} serves backup {export.backup.backup_id} of {export.backup.vm.id}"]
    lines += [f"{name} {uri}" for name, uri in zip(export.disks, export.uris(), strict=True)]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _storage_options_env() -> dict[str, object]:
    text = os.environ.get("GENIEVM_STORAGE_OPTIONS")
    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {}


def open_with_secret(
    ctx: typer.Context, repo: str | None, passphrase_file: Path | None
) -> tuple[Repository, str | None]:
    """The repository, and its passphrase for the nbdkit plugin (asked for once more when typed at the prompt)."""
    secret = None
    if passphrase_file is not None or os.environ.get(PASSPHRASE_ENV):
        secret = passphrase_source(passphrase_file)()
    repository = state(ctx).open_repository(repo, passphrase=secret)
    if repository.config.encryption is not None and secret is None:
        secret = passphrase_source(None)()
    return repository, secret


def chosen_disks(manifest: BackupManifest, disk: list[str] | None) -> list[str]:
    """The disks of ``manifest`` named by ``--disk`` (in order, once each), or all of them."""
    names = [d.name for d in manifest.disks]
    unknown = [name for name in disk or [] if name not in names]
    if unknown:
        raise BackupNotFoundError(
            f"backup {manifest.backup_id} has no disk {unknown[0]} (its disks: {', '.join(names)})"
        )
    return list(dict.fromkeys(disk)) if disk else names
