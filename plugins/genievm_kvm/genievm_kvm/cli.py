"""``genievm kvm enable-cbt|disable-cbt VM``: changed-block tracking for raw disks (``genievm_kvm.cbt_overlay``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genievm_core.cli.common import JsonOption, emit_json, out_console
from genievm_kvm.cbt_overlay import Change, disable_cbt, enable_cbt
from genievm_kvm.connection import connect, find_domain
from genievm_kvm.options import KVMOptions

__all__ = ["app"]

app = typer.Typer(help="KVM/libvirt tools: changed-block tracking for raw disks.", no_args_is_help=True)

VMArgument = Annotated[str, typer.Argument(help="the VM's name or UUID", metavar="VM")]
UriOption = Annotated[str, typer.Option("--uri", help="the libvirt connection", metavar="URI")]
DEFAULT_URI = KVMOptions().uri


@app.command("enable-cbt")
def enable_cbt_command(
    vm: VMArgument,
    disk: Annotated[
        list[str] | None, typer.Option("--disk", help="a raw disk (vda, ...); repeatable; default: all", metavar="DISK")
    ] = None,
    overlay_dir: Annotated[
        Path | None,
        typer.Option("--overlay-dir", help="where the overlays go (default: beside each raw file)", metavar="DIR"),
    ] = None,
    uri: UriOption = DEFAULT_URI,
    json_output: JsonOption = False,
) -> None:
    """Put each raw disk of a shut-off VM behind a qcow2 overlay whose data file is the raw disk.

    The raw disk keeps all the data; the overlay holds only qcow2 metadata and the dirty bitmaps that
    make incremental backups read only what changed. disable-cbt undoes it exactly.
    """
    conn = connect(uri)
    try:
        changes = enable_cbt(find_domain(conn, vm), disk or [], overlay_dir)
    finally:
        conn.close()
    if json_output:
        emit_json({"vm": vm, "disks": [_json(c) for c in changes]})
        return
    for c in changes:
        out_console.print(
            f"{c.disk}: now a qcow2 overlay {c.overlay} with data-file {c.raw} (the data stays in {c.raw})",
            highlight=False,
        )
    out_console.print(
        f"The domain's disks are qcow2 now: backups keep dirty bitmaps in the overlays. "
        f"Undo with: genievm kvm disable-cbt {vm}",
        highlight=False,
    )


@app.command("disable-cbt")
def disable_cbt_command(vm: VMArgument, uri: UriOption = DEFAULT_URI, json_output: JsonOption = False) -> None:
    """Undo enable-cbt on a shut-off VM: its disks as they were, the overlays and their checkpoints removed.

    The next backup of the VM compares chunk ids instead of reading changed blocks.
    """
    conn = connect(uri)
    try:
        changes, checkpoints = disable_cbt(find_domain(conn, vm))
    finally:
        conn.close()
    if json_output:
        emit_json({"vm": vm, "disks": [_json(c) for c in changes], "checkpoints_removed": checkpoints})
        return
    for c in changes:
        out_console.print(f"{c.disk}: back to the raw disk {c.raw}; removed {c.overlay}", highlight=False)
    if checkpoints:
        out_console.print(f"removed the checkpoints {', '.join(checkpoints)} (their bitmaps were in the overlays)",
                          highlight=False)  # fmt: skip


def _json(change: Change) -> dict[str, str]:
    return {"disk": change.disk, "raw": change.raw, "overlay": change.overlay}
