"""``genievm verify``: check backups without restoring them."""

from __future__ import annotations

from typing import Annotated

import typer

from genievm_core.cli.common import (
    JsonOption,
    NoLockOption,
    PassphraseFileOption,
    RepoOption,
    emit_json,
    out_console,
    state,
)
from genievm_core.errors import VerifyError
from genievm_core.jobs.repository_checks import REPOSITORY
from genievm_core.plugin.protocols import Problem, VerifyReport
from genievm_core.repository import Damaged


def verify(
    ctx: typer.Context,
    repo: RepoOption = None,
    vm: Annotated[str | None, typer.Option("--vm", help="only this VM's backups", metavar="VM")] = None,
    backup_id: Annotated[str | None, typer.Option("--backup", help="one backup id, or 'latest'", metavar="ID")] = None,
    read_data: Annotated[bool, typer.Option("--read-data", help="read and authenticate every chunk")] = False,
    passphrase_file: PassphraseFileOption = None,
    no_lock: NoLockOption = False,
    json_output: JsonOption = False,
) -> None:
    """Check backups: indexes and chunk presence, or every chunk's data with --read-data.

    Without --vm and --backup, also the repository: objects GenieVM did not write, and backups the backup
    log lists whose manifests are gone.
    """
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
    job = st.verify_job(repository, manifests, read_data=read_data, whole_repository=not (vm or backup_id))
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
                }
                for r in reports
            ]
        )
    else:
        for r in reports:
            status = "ok" if r.ok else f"{len(r.problems)} problems"
            out_console.print(f"{r.backup_id} {r.verifier}: {r.checked} checked, {status}", highlight=False)
            for p in r.problems:
                where = f"disk {p.disk}" if p.disk else ("backup" if r.backup_id != REPOSITORY else "")
                chunk = f" chunk {p.chunk_index}" if p.chunk_index is not None else ""
                out_console.print(f"  {where}{chunk}: {p.detail}" if where else f"  {p.detail}", highlight=False)
    if problems:
        named = sorted({f"{r.backup_id}:{p.disk}" if p.disk else r.backup_id for r, p in problems})
        raise VerifyError(f"verification found {len(problems)} problems in {', '.join(named)}")
