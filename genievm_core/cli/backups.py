"""``genievm backups``: list and show the backups in a repository."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Column, Table

from genievm_core.cli.common import (
    JsonOption,
    PassphraseFileOption,
    RepoOption,
    emit_json,
    human_size,
    out_console,
    state,
)
from genievm_core.errors import BackupNotFoundError, CorruptionError
from genievm_core.models.manifest import BackupManifest
from genievm_core.repository import Damaged

app = typer.Typer(help="List, show and forget backups.", no_args_is_help=True)


@app.command("list")
def list_backups(
    ctx: typer.Context,
    repo: RepoOption = None,
    vm: Annotated[str | None, typer.Option("--vm", help="only this VM's (its id, or its name)", metavar="VM")] = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every backup, oldest first."""
    st = state(ctx)
    repository = st.open_repository(repo, passphrase_file)
    damaged: list[Damaged] = []
    manifests = st.backups(repository, damaged=damaged)
    if vm is not None:
        by_id = [m for m in manifests if m.vm.id == vm]
        manifests = by_id or [m for m in manifests if m.vm.name == vm]
    _print_list(manifests, json_output)
    if damaged:
        errors = "; ".join(str(exc) for _, exc in damaged)
        raise CorruptionError(f"{len(damaged)} manifests cannot be read: {errors}")


def _print_list(manifests: list[BackupManifest], json_output: bool) -> None:
    if json_output:
        emit_json(
            [
                {
                    "backup_id": m.backup_id,
                    "vm": m.vm.id,
                    "vm_name": m.vm.name,
                    "kind": m.kind,
                    "parent_id": m.parent_id,
                    "finished_at": m.finished_at.isoformat(),
                    "disks": [d.name for d in m.disks],
                    "size": sum(d.size for d in m.disks),
                    "bytes_new": m.stats.bytes_new,
                }
                for m in manifests
            ]
        )
        return
    table = Table(
        Column("backup", no_wrap=True), Column("vm", no_wrap=True), "kind", "finished", "disks", "size", "new"
    )
    for m in manifests:
        table.add_row(
            m.backup_id,
            m.vm.id if m.vm.name == m.vm.id else f"{m.vm.name} ({m.vm.id})",
            m.kind,
            m.finished_at.strftime("%Y-%m-%d %H:%M:%S"),
            ",".join(d.name for d in m.disks),
            human_size(sum(d.size for d in m.disks)),
            human_size(m.stats.bytes_new),
        )
    out_console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(help="backup id, or 'latest' with --vm")],
    repo: RepoOption = None,
    vm: Annotated[str | None, typer.Option("--vm", metavar="VM", help="the VM whose 'latest' backup is shown")] = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """One backup's manifest: VM, disks, CBT mode and statistics."""
    repository = state(ctx).open_repository(repo, passphrase_file)
    manifest = repository.find_backup(vm, backup_id)
    data = manifest.model_dump(mode="json", exclude={"vm": {"config": True, "files": {"__all__": {"data"}}}})
    if json_output:
        emit_json(data)
        return
    out_console.print(
        f"backup {manifest.backup_id} of {manifest.vm.id} ({manifest.vm.provider}), {manifest.kind}"
        f", parent {manifest.parent_id or '-'}",
        highlight=False,
    )
    out_console.print(
        f"  {manifest.started_at:%Y-%m-%d %H:%M:%S} to {manifest.finished_at:%H:%M:%S} UTC", highlight=False
    )
    for d in manifest.disks:
        reason = f" ({d.cbt.reason})" if d.cbt.reason else ""
        out_console.print(
            f"  disk {d.name}: {human_size(d.size)}, {d.chunk_count} chunks, {d.cbt.mode}{reason}, "
            f"new {human_size(d.stats.bytes_new)}, checksum {d.checksum[:16]}",
            highlight=False,
        )
    for f in manifest.vm.files:
        out_console.print(f"  file {f.name}: {human_size(f.size)}, checksum {f.checksum[:16]}", highlight=False)


@app.command("forget")
def forget(
    ctx: typer.Context,
    backup_ids: Annotated[list[str], typer.Argument(help="backup ids", metavar="ID...")],
    repo: RepoOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Delete backups on purpose, recorded in the backup log (also one whose manifest is already gone).

    The chunks only they needed go at the next `genievm gc`.
    """
    repository = state(ctx).open_repository(repo, passphrase_file)
    with repository.lock("shared", "forget"):
        listed = repository.backup_log.read().listed
        present = set(repository.backup_ids())
        for backup_id in backup_ids:
            if backup_id not in listed | present:
                raise BackupNotFoundError(
                    f"no backup {backup_id} in repository {repository.url} (neither a manifest nor in the backup log)"
                )
        for backup_id in backup_ids:
            repository.forget(backup_id)
            out_console.print(f"forgot backup {backup_id}", highlight=False)
