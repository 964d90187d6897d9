"""``genievm instant start|finish|abort|list``: a KVM VM booted from a backup in seconds, then moved to its
own disks while it runs (``genievm restore --instant`` is ``instant start``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from genievm_core.cli.common import (
    JsonOption,
    PassphraseFileOption,
    RepoOption,
    emit_json,
    err_console,
    human_size,
    out_console,
    state,
)
from genievm_core.errors import ConfigError, GenieVMError
from genievm_core.jobs import default_job_db
from genievm_recovery.cli import open_with_secret
from genievm_recovery.instant import Instance, abort, cleanup_stale, find, instances, instant_root, serve_again, start
from genievm_recovery.migrate import CopyProgress, finish
from genievm_recovery.reader import DEFAULT_CACHE

__all__ = ["app"]

app = typer.Typer(help="Boot a KVM VM from a backup in seconds, then move it to its own disks while it runs.",
                  no_args_is_help=True)  # fmt: skip

InstantArgument = Annotated[str, typer.Argument(help="the instant VM's id (or its export's job id)", metavar="ID")]
MigrateToOption = Annotated[
    Path | None, typer.Option("--migrate-to", help="move the VM's disks into this folder (qcow2)", metavar="DIR")
]


def _job_db(ctx: typer.Context) -> Path:
    st = state(ctx)
    job_db = st.job_db or default_job_db()
    st.jobs(limit=1)  # the registry marks jobs whose process died as failed
    cleanup_stale(instant_root(job_db))
    return job_db


@app.command("start")
def start_command(
    ctx: typer.Context,
    new_name: Annotated[str, typer.Option("--new-name", help="name of the new VM (never the original's)")],
    repo: RepoOption = None,
    vm: Annotated[str | None, typer.Option("--vm", help="VM (id or name) whose backup boots")] = None,
    backup_id: Annotated[str, typer.Option("--backup", help="backup id or 'latest'")] = "latest",
    uri: Annotated[str, typer.Option("--uri", help="libvirt URI of this host")] = "qemu:///system",
    migrate_to: MigrateToOption = None,
    cache_mib: Annotated[
        int, typer.Option("--cache-mib", min=1, max=1 << 20, help="chunk cache size in MiB")
    ] = DEFAULT_CACHE >> 20,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Define and start a VM whose disks are qcow2 overlays on the backup's NBD export; with --migrate-to, then
    move it to its own disks."""
    job_db = _job_db(ctx)
    if vm is None and backup_id == "latest":
        raise ConfigError("invalid configuration: --vm: give the VM whose backup boots (or --backup ID)")
    st = state(ctx)
    repository, secret = open_with_secret(ctx, repo, passphrase_file)
    manifest = repository.find_backup(vm, backup_id)
    began = time.monotonic()
    instance = start(job_db, manifest, repo_url=repository.url, name=new_name, uri=uri, cache=cache_mib << 20,
                     passphrase=secret, storage_options=st.storage_options or None)  # fmt: skip
    seconds = time.monotonic() - began
    result: dict[str, Any] = _describe(instance) | {"seconds": round(seconds, 2), "migrated": None}
    if not json_output:
        out_console.print(f"instant {instance.id}: VM {instance.name} runs from backup {instance.backup} of "
                          f"{instance.vm}, started in {seconds:.1f} s", highlight=False)  # fmt: skip
        for disk in instance.disks:
            out_console.print(f"{disk} {instance.overlay(disk)} on {instance.export_uri(disk)}", highlight=False)
    if migrate_to is not None:
        try:
            result["migrated"] = _finish(ctx, instance, migrate_to, passphrase_file, json_output)
        except GenieVMError:
            if json_output:  # the instance is up: say so before the error
                emit_json(result)
            raise
    if json_output:
        emit_json(result)


@app.command("finish")
def finish_command(
    ctx: typer.Context,
    instance_id: InstantArgument,
    migrate_to: MigrateToOption = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Move a running instant VM to its own qcow2 disks (block copy, then pivot), define it, stop the export."""
    instance = find(instant_root(_job_db(ctx)), instance_id)
    moved = _finish(ctx, instance, migrate_to, passphrase_file, json_output)
    if json_output:
        emit_json(_describe(instance) | {"migrated": moved})


def _finish(
    ctx: typer.Context, instance: Instance, migrate_to: Path | None, passphrase_file: Path | None, json_output: bool
) -> dict[str, str]:
    folder = migrate_to or (Path(instance.migrate_to) if instance.migrate_to else None)
    if folder is None:
        raise ConfigError("invalid configuration: --migrate-to: give the folder the VM's disks move to")
    st = state(ctx)

    def restart_export() -> None:
        if not json_output:
            err_console.print(f"instant {instance.id}: its export is gone; serving the backup again, moving the "
                              "disks offline (the VM restarts on them)", highlight=False, markup=False)  # fmt: skip
        serve_again(instance, st.job_db or default_job_db(), open_with_secret(ctx, instance.repo, passphrase_file)[1])

    moved = finish(instance, folder, st.registry, _progress(not json_output), restart_export)
    if not json_output:
        out_console.print(f"instant {instance.id}: VM {instance.name} runs on its own disks, export stopped",
                          highlight=False)  # fmt: skip
        for disk, path in moved.items():
            out_console.print(f"{disk} {path}", highlight=False)
    return moved


def _progress(enabled: bool) -> CopyProgress:
    shown: dict[str, float] = {}

    def show(disk: str, copied: int, total: int) -> None:
        now = time.monotonic()
        done = bool(total) and copied == total
        if enabled and (done or now - shown.get(disk, 0.0) >= 2.0):
            percent = 100 * copied // total if total else 0
            err_console.print(f"{disk}: {human_size(copied)} of {human_size(total)} copied ({percent}%)",
                              highlight=False, markup=False)  # fmt: skip
            shown[disk] = now

    return show


@app.command("abort")
def abort_command(ctx: typer.Context, instance_id: InstantArgument, json_output: JsonOption = False) -> None:
    """Destroy an instant VM and remove everything it made: overlays, export, socket, unfinished copies."""
    instance = find(instant_root(_job_db(ctx)), instance_id)
    abort(instance, state(ctx).registry)
    if json_output:
        emit_json(_describe(instance) | {"aborted": True})
    else:
        out_console.print(f"instant {instance.id}: VM {instance.name} destroyed, its overlays and export removed",
                          highlight=False)  # fmt: skip


@app.command("list")
def list_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The instant VMs of this host: id, VM, backup, state and whether the export serves."""
    found = instances(instant_root(_job_db(ctx)))
    if json_output:
        emit_json([_describe(instance) for instance in found])
        return
    if not found:
        out_console.print("no instant VMs", highlight=False)
    for instance in found:
        export = "serving" if instance.serving() else "export gone"
        out_console.print(f"{instance.id} {instance.name} {instance.backup} {instance.state} {export}",
                          highlight=False)  # fmt: skip


def _describe(instance: Instance) -> dict[str, Any]:
    job, _pid = instance.owner()
    return {
        "instant": instance.id,
        "export_job": job,
        "vm": instance.name,
        "uuid": instance.uuid,
        "backup": instance.backup,
        "source_vm": instance.vm,
        "state": instance.state,
        "serving": instance.serving(),
        "disks": {d: {"overlay": str(instance.overlay(d)), "export": instance.export_uri(d)} for d in instance.disks},
    }
