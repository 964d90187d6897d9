"""``genievm prune`` (retention rules, then garbage collection) and ``genievm gc``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

import typer

from genievm_core.choices import MAX_COUNT, MAX_SECONDS
from genievm_core.cli.common import (
    ConfigFileOption,
    JsonOption,
    PassphraseFileOption,
    RepoOption,
    emit_json,
    out_console,
    state,
)
from genievm_core.errors import ConfigError
from genievm_core.jobs import DEFAULT_GRACE, retention_policy
from genievm_core.models.config import MAX_RETENTION_DAYS, BackupConfig, load_config
from genievm_core.repository.gc import PruneReport
from genievm_core.repository.retention import RetentionPolicy

GraceOption = Annotated[
    str,
    typer.Option(
        "--grace",
        help="keep unreferenced objects until they have been unreferenced this long: 0, 90s, 30m, 24h, 7d",
        metavar="DURATION",
    ),
]
LockWaitOption = Annotated[
    float,
    typer.Option(
        "--lock-wait",
        min=0,
        max=MAX_SECONDS,
        metavar="SECONDS",
        help="seconds to wait for running backups before deleting",
    ),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="show what would be deleted; delete nothing")]


def _count(help_text: str, most: int = MAX_COUNT) -> Any:
    return typer.Option(min=1, max=most, metavar="N", help=help_text)


DEFAULT_GRACE_TEXT = f"{int(DEFAULT_GRACE.total_seconds() // 3600)}h"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_GRACE = timedelta(days=MAX_RETENTION_DAYS)


def parse_duration(text: str, option: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"invalid configuration: {option}: {text!r} is not a duration like 0, 90s, 30m, 24h or 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_GRACE.total_seconds():
        raise ConfigError(f"invalid configuration: {option}: {text!r} is longer than {MAX_GRACE.days}d")
    return timedelta(seconds=seconds)


def prune(
    ctx: typer.Context,
    config_file: ConfigFileOption = None,
    repo: RepoOption = None,
    vm: Annotated[
        list[str] | None, typer.Option("--vm", help="only this VM's backups (repeatable)", metavar="VM")
    ] = None,
    keep_last: Annotated[int | None, _count("keep the newest N backups of each VM")] = None,
    keep_daily: Annotated[int | None, _count("keep the newest backup of each of the last N days")] = None,
    keep_weekly: Annotated[int | None, _count("keep the newest backup of each of the last N weeks")] = None,
    keep_monthly: Annotated[int | None, _count("keep the newest backup of each of the last N months")] = None,
    retention_days: Annotated[
        int | None, _count("remove backups older than N days (retentionDays)", MAX_RETENTION_DAYS)
    ] = None,
    max_backups: Annotated[int | None, _count("keep at most N backups of each VM (maxBackups)")] = None,
    grace: GraceOption = DEFAULT_GRACE_TEXT,
    lock_wait: LockWaitOption = 3600.0,
    dry_run: DryRunOption = False,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete the backups the retention rules do not keep, then the chunks no backup needs.

    Rules come from the options, or from a job config (--config: its vmId and keep*/retentionDays/maxBackups).
    """
    options: dict[str, Any] = {
        "keep_last": keep_last,
        "keep_daily": keep_daily,
        "keep_weekly": keep_weekly,
        "keep_monthly": keep_monthly,
        "retention_days": retention_days,
        "max_backups": max_backups,
    }
    vms = list(vm) if vm else None
    if config_file is not None:
        config = load_config(
            BackupConfig, path=config_file, overrides=options | {"backup_path": repo, "vm_id": vms[0] if vms else None}
        )
        policy, repo, vms = retention_policy(config), config.backup_path, vms or [config.vm_id]
    else:
        policy = RetentionPolicy(**options)
    if policy.empty:
        raise ConfigError(
            "invalid configuration: retention: give at least one of --keep-last, --keep-daily, --keep-weekly, "
            "--keep-monthly, --retention-days, --max-backups (or run `genievm gc`)"
        )
    _run(ctx, repo, passphrase_file, policy, vms, grace, lock_wait, dry_run, json_output)


def gc(
    ctx: typer.Context,
    repo: RepoOption = None,
    grace: GraceOption = DEFAULT_GRACE_TEXT,
    lock_wait: LockWaitOption = 3600.0,
    dry_run: DryRunOption = False,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete the chunks and indexes no backup needs (after the grace period)."""
    _run(ctx, repo, passphrase_file, RetentionPolicy(), None, grace, lock_wait, dry_run, json_output)


def _run(
    ctx: typer.Context,
    repo: str | None,
    passphrase_file: Any,
    policy: RetentionPolicy,
    vms: list[str] | None,
    grace: str,
    lock_wait: float,
    dry_run: bool,
    json_output: bool,
) -> None:
    period = parse_duration(grace, "--grace")
    st = state(ctx)
    repository = st.open_repository(repo, passphrase_file)
    job = st.prune_job(repository, policy, vms, grace=period, dry_run=dry_run, lock_wait=lock_wait)
    st.run(job)
    report = job.report
    assert report is not None
    if json_output:
        emit_json(report.to_json() | {"job_id": job.id})
    else:
        _print(report)


def _print(report: PruneReport) -> None:
    would = "would be " if report.dry_run else ""
    out_console.print(
        f"{len(report.removed_backups)} backups {would}removed; {report.unreferenced} unreferenced objects: "
        f"{len(report.deleted)} {would}deleted, {report.kept_by_grace} kept for the grace period"
        + (f", {len(report.not_deletable)} not deletable yet (under retention)" if report.not_deletable else ""),
        highlight=False,
    )
    for backup_id in report.removed_backups:
        out_console.print(f"  {would}removed {backup_id}", highlight=False)
