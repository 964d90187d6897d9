"""``genievm repo copy SRC DST``: copy backups into another repository (an offsite copy)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from genievm_core.cli.common import JsonOption, PassphraseFileOption, emit_json, human_size, out_console, plural, state
from genievm_core.engine.limits import Bandwidth
from genievm_core.models.config import MAX_MBPS
from genievm_core.models.manifest import BackupManifest
from genievm_core.repository.copy import copy_backups, select_backups

TO_PASSPHRASE_ENV = "GENIEVM_TO_PASSPHRASE"


def copy(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="SRC", help="the repository to copy from (path or URL)")],
    target: Annotated[str, typer.Argument(metavar="DST", help="the repository to copy into (it must exist)")],
    vm: Annotated[
        list[str] | None,
        typer.Option("--vm", metavar="VM", help="copy the backups of this VM, id or name (repeatable)"),
    ] = None,
    backup: Annotated[
        list[str] | None, typer.Option("--backup", metavar="ID", help="copy this backup (repeatable)")
    ] = None,
    passphrase_file: PassphraseFileOption = None,
    to_passphrase_file: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help=f"file holding DST's passphrase (or {TO_PASSPHRASE_ENV}; neither: SRC's passphrase is tried)",
        ),
    ] = None,
    limit_write: Annotated[
        float | None,
        typer.Option(min=0, max=MAX_MBPS, metavar="MBPS", help="at most this rate written to DST, MB/s; 0: no limit"),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Copy backups from SRC into DST (all, or those of --vm and --backup), sending only the chunks DST lacks.

    Run it again after an interruption: what was copied is kept and not sent again.
    """
    st = state(ctx)
    src = st.open_repository(source, passphrase_file)
    to_passphrase = os.environ.get(TO_PASSPHRASE_ENV) if to_passphrase_file is None else None
    dst = st.open_repository(target, to_passphrase_file, passphrase=to_passphrase or None)
    backups = select_backups(src, vm or (), backup or ())

    def copied(manifest: BackupManifest, sent: bool) -> None:
        if not json_output:
            what = "copied" if sent else "already in DST:"
            out_console.print(f"{what} {manifest.backup_id} ({manifest.vm.name})", highlight=False, markup=False)

    stats = copy_backups(src, dst, backups, limit=Bandwidth(limit_write), on_copied=copied)
    if json_output:
        emit_json({"source": src.url, "target": dst.url} | stats.to_json())
        return
    out_console.print(
        f"{plural(stats.backups_copied, 'backup')} copied, {stats.backups_present} already in {dst.url}; "
        f"{plural(stats.chunks_sent, 'chunk')} sent ({human_size(stats.bytes_sent)}), "
        f"{stats.chunks_present} found there",
        highlight=False,
        markup=False,
    )
