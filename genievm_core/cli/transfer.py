"""``genievm backup`` and ``genievm restore``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from genievm_core.cli.common import (
    ConfigFileOption,
    JsonOption,
    LockWaitOption,
    NoLockOption,
    PassphraseFileOption,
    ProviderOptionOption,
    RepoOption,
    disk_progress,
    emit_json,
    human_rate,
    human_size,
    out_console,
    plural,
    provider_options,
    ratio,
    state,
)
from genievm_core.engine.control import MAX_WORKERS
from genievm_core.errors import ConfigError
from genievm_core.models.config import MAX_MBPS, BackupConfig, RestoreConfig, load_config
from genievm_core.models.manifest import BackupManifest

WorkersOption = Annotated[
    int | None,
    typer.Option(min=1, max=MAX_WORKERS, help="chunk worker threads (default: CPUs)", metavar="N"),
]


def _limit_option(help_text: str) -> Any:
    return typer.Option(min=0, max=MAX_MBPS, metavar="MBPS", help=f"{help_text}, MB/s; 0: no limit")


def _restore_instant(ctx: typer.Context, instant: bool, args: list[str]) -> None:
    """``restore --instant``: the command ``instant start`` of genievm-recovery, found through the
    ``genievm.commands`` entry points (the core never imports that distribution)."""
    from genievm_core.cli import COMMANDS, load_plugin_command, plugin_commands

    if not instant:
        raise ConfigError("invalid configuration: --migrate-to: needs --instant")
    if "instant" not in plugin_commands(frozenset(COMMANDS)):
        raise ConfigError("invalid configuration: --instant: needs the distribution genievm-recovery, "
                          "which is not installed")  # fmt: skip
    command = load_plugin_command("instant")
    with command.make_context("genievm instant", ["start", *args], parent=ctx.find_root()) as instant_ctx:
        command.invoke(instant_ctx)


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).stem, value
        if not name or not path:
            raise ConfigError(f"invalid configuration: {option}: {value!r} is not NAME=PATH")
        if name in out:
            raise ConfigError(f"invalid configuration: {option}: disk {name} is given twice")
        out[name] = path
    return out


def _disk_configs(targets: dict[str, str], formats: dict[str, str]) -> tuple[dict[str, str], ...]:
    names = sorted(set(targets) | set(formats))
    return tuple(
        {"name": n}
        | ({"target": targets[n]} if n in targets else {})
        | ({"format": formats[n]} if n in formats else {})
        for n in names
    )


def backup(
    ctx: typer.Context,
    config_file: ConfigFileOption = None,
    vm: Annotated[str | None, typer.Option("--vm", help="VM id or name (vmId)", metavar="VM")] = None,
    repo: RepoOption = None,
    provider: Annotated[str | None, typer.Option(help="provider plugin (default image)", metavar="NAME")] = None,
    disk: Annotated[
        list[str] | None, typer.Option("--disk", help="image provider: NAME=PATH (repeatable)", metavar="NAME=PATH")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="read everything; no incremental")] = False,
    compression_level: Annotated[
        int | None, typer.Option(min=1, max=22, help="zstd level 1-22", metavar="LEVEL")
    ] = None,
    max_concurrent_disks: Annotated[
        int | None, typer.Option(min=1, max=64, metavar="N", help="disks copied at once (maxConcurrentDisks)")
    ] = None,
    exclude_disk: Annotated[
        list[str] | None,
        typer.Option("--exclude-disk", metavar="NAME", help="leave this disk out (excludedDisks; repeatable)"),
    ] = None,
    no_cbt: Annotated[bool, typer.Option("--no-cbt", help="compare chunk ids instead of using CBT")] = False,
    quiesce: Annotated[bool, typer.Option("--quiesce", help="freeze guest filesystems (QEMU guest agent)")] = False,
    provider_option: ProviderOptionOption = None,
    workers: WorkersOption = None,
    limit_read: Annotated[
        float | None, _limit_option("at most this rate read from the VM's disks (bandwidthLimitRead)")
    ] = None,
    limit_write: Annotated[
        float | None, _limit_option("at most this rate written to the repository (bandwidthLimitWrite)")
    ] = None,
    passphrase_file: PassphraseFileOption = None,
    lock_wait: LockWaitOption = 10.0,
    json_output: JsonOption = False,
) -> None:
    """Back up a VM into a repository (incremental when it has a parent)."""
    overrides: dict[str, Any] = {
        "vm_id": vm,
        "backup_path": repo,
        "provider": provider,
        "compression_level": compression_level,
        "max_concurrent_disks": max_concurrent_disks,
        "excluded_disks": tuple(exclude_disk) if exclude_disk else None,
        "incremental": False if full else None,
        "enable_cbt": False if no_cbt else None,
        "quiesce": True if quiesce else None,
        "bandwidth_limit_read": limit_read,
        "bandwidth_limit_write": limit_write,
    }
    config = load_config(BackupConfig, path=config_file, overrides=overrides)
    if provider_option:
        config = config.model_copy(
            update={"provider_options": provider_options(config.provider_options, provider_option)}
        )
    if disk:
        options = dict(config.provider_options)
        options["vms"] = {**options.get("vms", {}), config.vm_id: _pairs(disk, "--disk")}
        config = config.model_copy(update={"provider_options": options})
    st = state(ctx)
    repository = st.open_repository(
        config.backup_path,
        passphrase_file,
        compression_level=config.compression_level,
        storage_options=config.storage_options,
        lock_wait=lock_wait,
    )
    started = time.monotonic()
    job = st.backup_job(config, repository, workers=workers)
    with disk_progress(not json_output) as progress:
        st.run(job, progress)
    elapsed = time.monotonic() - started
    assert job.manifest is not None
    extra: dict[str, Any] = {"elapsed_seconds": elapsed, "job_id": job.id}
    for key in ("prune", "prune_error"):
        if job.result and key in job.result:
            extra[key] = job.result[key]
    if json_output:
        emit_json(job.manifest.model_dump(mode="json", exclude={"vm": {"config"}}) | extra)
    else:
        _print_backup(job.manifest, elapsed)
        if "prune" in extra:
            report = extra["prune"]
            out_console.line(
                f"pruned: {len(report['removed_backups'])} backups removed, {report['deleted_objects']} objects "
                f"deleted, {report['kept_by_grace']} kept for the grace period"
            )
        if "prune_error" in extra:
            out_console.line(f"prune after the backup failed: {extra['prune_error']}")


def _print_backup(manifest: BackupManifest, elapsed: float) -> None:
    s = manifest.stats
    out_console.line(
        f"backup {manifest.backup_id} of {manifest.vm.id}: {manifest.kind}, {plural(len(manifest.disks), 'disk')}, "
        f"{human_size(s.bytes_scanned)} examined in {elapsed:.1f} s ({human_rate(s.bytes_scanned, elapsed)})"
    )
    out_console.line(
        f"  added to the repository: {human_size(s.bytes_new)} ({human_size(s.bytes_stored)} stored, "
        f"compression {ratio(s.bytes_new, s.bytes_stored)}); unchanged or deduplicated: "
        f"{human_size(s.bytes_deduplicated)} (dedup {ratio(s.bytes_new + s.bytes_deduplicated, s.bytes_new)}); "
        f"zero: {human_size(s.bytes_zero)}"
    )
    for d in manifest.disks:
        why = f" ({d.cbt.reason})" if d.cbt.reason else ""
        out_console.line(f"  {d.name}: {human_size(d.size)}, {d.cbt.mode}{why}")


def restore(
    ctx: typer.Context,
    config_file: ConfigFileOption = None,
    vm: Annotated[str | None, typer.Option("--vm", help="VM whose backup is restored", metavar="VM")] = None,
    backup_id: Annotated[str | None, typer.Option("--backup", help="backup id or 'latest'", metavar="ID")] = None,
    repo: RepoOption = None,
    target: Annotated[
        Path | None, typer.Option("--target", help="folder to restore into (restorePath)", metavar="DIR")
    ] = None,
    provider: Annotated[
        str | None, typer.Option(metavar="NAME", help="provider plugin that restores (default image)")
    ] = None,
    new_name: Annotated[
        str | None, typer.Option(metavar="NAME", help="restore the VM under this name (newVmName)")
    ] = None,
    disk_target: Annotated[
        list[str] | None, typer.Option("--disk-target", help="NAME=PATH for one disk (repeatable)", metavar="NAME=PATH")
    ] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="skip reading the restored disks back")] = False,
    disk_format: Annotated[
        list[str] | None,
        typer.Option(
            "--disk-format", help="NAME=raw|qcow2 for one disk (default: as backed up)", metavar="NAME=FORMAT"
        ),
    ] = None,
    power_on: Annotated[
        bool, typer.Option("--power-on", help="start the VM once restored (powerOnAfterRestore)")
    ] = False,
    provider_option: ProviderOptionOption = None,
    disk_bus: Annotated[
        str | None,
        typer.Option("--disk-bus", help="kvm, of a vmware backup: sata (default), virtio or scsi (-o diskBus)"),
    ] = None,
    network_map: Annotated[
        list[str] | None,
        typer.Option("--network-map", help="SRC=DST: a card's network (repeatable; -o networkMap)", metavar="SRC=DST"),
    ] = None,
    keep_macs: Annotated[
        bool, typer.Option("--keep-macs", help="keep the backed-up MAC addresses (-o keepMacs)")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite existing targets")] = False,
    workers: WorkersOption = None,
    limit_read: Annotated[
        float | None, _limit_option("at most this rate read from the repository (bandwidthLimitRead)")
    ] = None,
    limit_write: Annotated[
        float | None, _limit_option("at most this rate written to the restored disks (bandwidthLimitWrite)")
    ] = None,
    passphrase_file: PassphraseFileOption = None,
    no_lock: NoLockOption = False,
    lock_wait: LockWaitOption = 10.0,
    json_output: JsonOption = False,
    instant: Annotated[
        bool, typer.Option("--instant", help="boot the VM from the backup now (genievm instant start; KVM)")
    ] = False,
    migrate_to: Annotated[
        Path | None, typer.Option("--migrate-to", help="with --instant: then move its disks here", metavar="DIR")
    ] = None,
) -> None:
    """Restore a backup: its disks, and the VM where the provider can define one."""
    if instant or migrate_to is not None:
        unused = {"--config": config_file, "--target": target, "--disk-target": disk_target,
                  "--disk-format": disk_format, "--power-on": power_on, "--force": force}  # fmt: skip
        for option, value in unused.items():
            if value:
                raise ConfigError(f"invalid configuration: {option}: not with --instant (the VM runs on overlays)")
        args = {"--repo": repo, "--vm": vm, "--backup": backup_id, "--new-name": new_name, "--migrate-to": migrate_to,
                "--passphrase-file": passphrase_file}  # fmt: skip
        args["--uri"] = provider_options({}, provider_option).get("uri")
        flags = ["--json"] if json_output else []
        _restore_instant(ctx, instant, [*(f"{k}={v}" for k, v in args.items() if v is not None), *flags])
        return
    overrides: dict[str, Any] = {
        "vm_id": vm,
        "backup_id": backup_id,
        "backup_path": repo,
        "restore_path": target,
        "provider": provider,
        "new_vm_name": new_name,
        "verify_after_restore": False if no_verify else None,
        "power_on_after_restore": True if power_on else None,
        "force": True if force else None,
        "disk_configs": _disk_configs(_pairs(disk_target, "--disk-target"), _pairs(disk_format, "--disk-format"))
        or None,
        "bandwidth_limit_read": limit_read,
        "bandwidth_limit_write": limit_write,
    }
    config = load_config(RestoreConfig, path=config_file, overrides=overrides)
    if provider_option:
        config = config.model_copy(
            update={"provider_options": provider_options(config.provider_options, provider_option)}
        )
    shorthand = {"diskBus": disk_bus, "networkMap": ",".join(network_map or []) or None, "keepMacs": keep_macs or None}
    if any(v is not None for v in shorthand.values()):  # the cross-hypervisor options, as -o would give them
        given = {k: v for k, v in shorthand.items() if v is not None}
        config = config.model_copy(update={"provider_options": {**config.provider_options, **given}})
    st = state(ctx)
    repository = st.open_repository(
        config.backup_path,
        passphrase_file,
        storage_options=config.storage_options,
        no_lock=no_lock,
        lock_wait=lock_wait,
    )
    started = time.monotonic()
    job = st.restore_job(config, repository, workers=workers)
    with disk_progress(not json_output) as progress:
        st.run(job, progress)
    elapsed = time.monotonic() - started
    result = job.restored
    assert result is not None
    if json_output:
        emit_json(result.__dict__ | {"elapsed_seconds": elapsed, "job_id": job.id})
    else:
        verified = ", verified" if result.verified else ""
        out_console.line(
            f"restored backup {result.backup_id} as {result.vm_id}: {plural(len(result.disks), 'disk')} "
            f"({', '.join(result.disks)}) into {config.restore_path or 'their targets'}{verified}, in {elapsed:.1f} s"
        )
