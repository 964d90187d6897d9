"""``genievm plugins``: what is installed and what each plugin registers."""

from __future__ import annotations

import typer
from rich.table import Table

from genievm_core.cli.common import JsonOption, emit_json, out_console, state


def plugins(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the plugins: name, distribution, version and what each registers."""
    infos = state(ctx).host.plugins()
    if json_output:
        emit_json([i.__dict__ for i in infos])
        return
    table = Table("plugin", "distribution", "version", "origin", "registers")
    for i in infos:
        registers = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in i.registers.items())
        table.add_row(i.name, i.distribution, i.version, i.origin, registers or "-")
    out_console.print(table)
