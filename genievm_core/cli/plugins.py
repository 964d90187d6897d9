"""``genievm plugins``: what is installed and what each plugin registers; ``--check`` runs their self-checks."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from genievm_core.cli.common import JsonOption, emit_json, out_console, state
from genievm_core.errors import PluginCheckError, PluginError
from genievm_core.plugin.host import PluginHost


def plugins(
    ctx: typer.Context,
    json_output: JsonOption = False,
    check: Annotated[
        bool, typer.Option("--check", help="run the contract self-checks the installed plugins declare")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="with --check: only this plugin's self-checks (repeatable)", metavar="NAME"),
    ] = None,
) -> None:
    """List the plugins: name, distribution, version and what each registers."""
    host = state(ctx).host
    if check:
        _check(host, only or [], list(state(ctx).disabled_plugins), json_output)
        return
    infos = host.plugins()
    if json_output:
        emit_json([{k: v for k, v in asdict(i).items() if k != "options" or v} for i in infos])  # options: if any
        return
    table = Table("plugin", "distribution", "version", "origin", "registers")
    for i in infos:
        registers = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in i.registers.items())
        table.add_row(i.name, i.distribution, i.version, i.origin, registers or "-")
    out_console.print(table)


def _check(host: PluginHost, only: list[str], disabled: list[str], json_output: bool) -> None:
    """Run the self-checks, print one row each (and the failures), raise PluginCheckError when any failed."""
    from genievm_core.plugin.selfcheck import run_self_checks

    names = {p.name for p in host.plugins()}
    unknown = sorted(set(only) - names)
    if unknown:
        raise PluginError(f"no plugin named {unknown[0]!r} is installed (installed: {', '.join(sorted(names))})")
    results = run_self_checks(host, plugins=only, disabled=disabled)
    if json_output:
        emit_json([asdict(r) for r in results])
    else:
        table = Table("plugin", "self-check", "result", "passed", "failed", "skipped", "seconds")
        for r in results:
            table.add_row(r.plugin, r.name, r.outcome, str(r.passed), str(r.failed), str(r.skipped), f"{r.seconds:.1f}")
        declared = {r.plugin for r in host.self_checks}
        for name in sorted(names - declared):
            if not only or name in only:
                table.add_row(name, "-", "none declared", "", "", "", "")
        out_console.print(table)
        for r in results:
            for problem in r.problems:
                out_console.print(f"{r.plugin}: {r.name}: {problem}", markup=False, highlight=False, soft_wrap=True)
    bad = [r for r in results if not r.ok]
    if bad:
        first = ", ".join(f"{r.plugin}: {r.name}" for r in bad)
        raise PluginCheckError(f"self-checks failed: {len(bad)} of {len(results)} ({first})")
