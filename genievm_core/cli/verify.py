"""``genievm verify``: check backups without restoring them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from genievm_core.api import PASSPHRASE_ENV, passphrase_source
from genievm_core.cli.common import (
    JsonOption,
    NoLockOption,
    PassphraseFileOption,
    RepoOption,
    emit_json,
    out_console,
    state,
)
from genievm_core.errors import ConfigError, VerifyError
from genievm_core.jobs import default_job_db
from genievm_core.jobs.repository_checks import REPOSITORY
from genievm_core.plugin.protocols import Problem, VerifyReport
from genievm_core.repository import Damaged


def verify(
    ctx: typer.Context,
    repo: RepoOption = None,
    vm: Annotated[str | None, typer.Option("--vm", help="only this VM's backups", metavar="VM")] = None,
    backup_id: Annotated[str | None, typer.Option("--backup", help="one backup id, or 'latest'", metavar="ID")] = None,
    read_data: Annotated[bool, typer.Option("--read-data", help="read and authenticate every chunk")] = False,
    boot: Annotated[
        bool, typer.Option("--boot", help="boot each backup in a throwaway KVM VM and wait for a heartbeat")
    ] = False,
    boot_timeout: Annotated[
        float, typer.Option("--boot-timeout", min=1, max=86400, metavar="SECONDS", help="--boot: how long to wait")
    ] = 120.0,
    boot_pattern: Annotated[
        str | None,
        typer.Option("--boot-pattern", metavar="REGEX", help="--boot: the serial console's heartbeat (default login:)"),
    ] = None,
    boot_accel: Annotated[
        str, typer.Option("--boot-accel", metavar="auto|kvm|tcg", help="--boot: KVM, or QEMU's emulation (tcg)")
    ] = "auto",
    boot_screenshots: Annotated[
        Path | None,
        typer.Option("--boot-screenshots", metavar="DIR", help="--boot: where screenshots go (default: boot-checks/ "
                     "beside the job registry)"),
    ] = None,  # fmt: skip
    passphrase_file: PassphraseFileOption = None,
    no_lock: NoLockOption = False,
    json_output: JsonOption = False,
) -> None:
    """Check backups: indexes and chunk presence, or every chunk's data with --read-data.

    Without --vm and --backup, also the repository: objects GenieVM did not write, and backups the backup
    log lists whose manifests are gone.
    """
    if boot_pattern is not None:
        try:
            re.compile(boot_pattern)
        except re.error as exc:
            raise ConfigError(
                f"invalid configuration: --boot-pattern: {boot_pattern!r} is not a regular expression ({exc})"
            ) from exc
    if boot_accel not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"invalid configuration: --boot-accel: {boot_accel!r} is not auto, kvm or tcg")
    st = state(ctx)
    repository = st.open_repository(repo, passphrase_file, no_lock=no_lock)
    damaged: list[Damaged] = []
    if backup_id:
        manifests = [repository.find_backup(vm, backup_id)]
    else:
        manifests = st.backups(repository, vm, damaged=damaged)
    reports = [
        VerifyReport("manifest", bid, 1, [Problem(None, f"manifest cannot be read: {exc}")]) for bid, exc in damaged
    ]
    extra: dict[str, dict[str, Any]] = {}
    if boot:
        secret = None
        if passphrase_file is not None or os.environ.get(PASSPHRASE_ENV) or repository.config.encryption is not None:
            secret = passphrase_source(passphrase_file)()  # for the export, which opens the repository itself
        extra["boot"] = {
            "timeout": boot_timeout,
            "accel": boot_accel,
            "screenshots": boot_screenshots or (st.job_db or default_job_db()).parent / "boot-checks",
            "passphrase": secret,
            "storage_options": st.storage_options,
            **({"pattern": boot_pattern} if boot_pattern else {}),
        }
    job = st.verify_job(
        repository, manifests, read_data=read_data, whole_repository=not (vm or backup_id), extra=extra
    )
    st.run(job)
    reports += job.reports
    problems = [(r, p) for r in reports for p in r.problems]
    if json_output:
        emit_json(
            [
                {
                    "backup_id": r.backup_id,
                    "verifier": r.verifier,
                    "checked": r.checked,
                    "problems": [p.__dict__ for p in r.problems],
                    **({"details": r.details} if r.details else {}),
                }
                for r in reports
            ]
        )
    else:
        for r in reports:
            status = "ok" if r.ok else f"{len(r.problems)} problems"
            out_console.print(f"{r.backup_id} {r.verifier}: {r.checked} checked, {status}", highlight=False)
            for key, value in r.details.items():
                if value is not None and value != "":
                    out_console.print(f"  {key}: {value}", highlight=False)
            for p in r.problems:
                where = f"disk {p.disk}" if p.disk else ("backup" if r.backup_id != REPOSITORY else "")
                chunk = f" chunk {p.chunk_index}" if p.chunk_index is not None else ""
                out_console.print(f"  {where}{chunk}: {p.detail}" if where else f"  {p.detail}", highlight=False)
    if problems:
        named = sorted({f"{r.backup_id}:{p.disk}" if p.disk else r.backup_id for r, p in problems})
        raise VerifyError(f"verification found {len(problems)} problems in {', '.join(named)}")
