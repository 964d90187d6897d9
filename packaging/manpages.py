"""Man pages from the ``genievm`` command's own help: one page per command, in groff's man macros.

Walks the click command tree that ``genievm`` runs (the built-in commands and those the installed
distributions add through ``genievm.commands``) and writes ``genievm.1``, ``genievm-backup.1``,
``genievm-repo-init.1`` and so on, each from the command's help text, usage and options, so the
pages say what ``--help`` says. A page goes into a folder named after the distribution that owns
the command (``genievm-core`` for the built-in ones), so that each Debian package installs its own::

    python packaging/manpages.py OUT --version 0.2.0 --date 2026-12-06
    # OUT/genievm-core/genievm.1, OUT/genievm-core/genievm-backup.1, OUT/genievm-recovery/genievm-serve.1 ...
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import typer
from typer import _click as click  # the click typer vendors, the one its commands are made of
from typer.core import TyperGroup

from genievm_core.cli import COMMANDS, app, plugin_commands

CORE = "genievm-core"


def escape(text: str) -> str:
    """Text for a man page: backslashes and minus signs escaped, no line taken for a macro."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def paragraphs(text: str) -> str:
    """Help text as man paragraphs: click's ``\\b`` markers dropped, blank lines made ``.PP``."""
    blocks = [re.sub(r"\s*\n\s*", " ", b.replace("\b", "").strip()) for b in re.split(r"\n\s*\n", text)]
    return "\n.PP\n".join(escape(b) for b in blocks if b)


def walk(
    command: click.Command, path: list[str], ctx: click.Context
) -> Iterator[tuple[list[str], click.Command, click.Context]]:
    """Every command under ``command`` (itself first), with the words that name it and a context like a run's
    (so that usage lines name the parent commands)."""
    yield path, command, ctx
    if isinstance(command, TyperGroup):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, [*path, name], click.Context(sub, info_name=name, parent=ctx))


def page(path: list[str], command: click.Command, ctx: click.Context, version: str, date: str) -> str:
    """The man page of the command named by ``path`` (``["genievm", "repo", "init"]``)."""
    name = "-".join(path)
    summary = (command.short_help or command.get_short_help_str(limit=200)).rstrip(".")
    lines = [
        f'.TH "{name.upper()}" "1" "{date}" "genievm {version}" "GenieVM manual"',
        ".SH NAME",
        f"{escape(name)} \\- {escape(summary)}",
        ".SH SYNOPSIS",
        f".B {escape(' '.join(path))}",
        escape(" ".join(command.collect_usage_pieces(ctx))),
    ]
    if command.help:
        lines += [".SH DESCRIPTION", paragraphs(command.help)]
    records = [r for r in (p.get_help_record(ctx) for p in command.get_params(ctx)) if r is not None]
    if records:
        lines.append(".SH OPTIONS")
        for opts, help_text in records:
            lines += [".TP", f".B {escape(opts)}", paragraphs(help_text) or "\\&"]
    if isinstance(command, TyperGroup):
        subs = [n for n in command.list_commands(ctx) if (c := command.get_command(ctx, n)) and not c.hidden]
        lines += [".SH COMMANDS"] + [f".TP\n.B {escape(n)}\nsee \\fB{escape(name)}\\-{escape(n)}\\fR(1)" for n in subs]
    if len(path) > 1:
        lines += [".SH SEE ALSO", f"\\fB{escape('-'.join(path[:-1]))}\\fR(1)"]
    return "\n".join(lines) + "\n"


def owners() -> dict[str, str]:
    """The top-level commands and the distribution each comes from."""
    return {name: CORE for name in COMMANDS} | plugin_commands(frozenset(COMMANDS))


def write_pages(out: Path, version: str, date: str) -> list[Path]:
    """Write every command's page under ``out/<distribution>/``; the paths written."""
    root = typer.main.get_command(app)
    root_ctx = click.Context(root, info_name="genievm")
    owner = owners()
    written = []
    for path, command, ctx in walk(root, ["genievm"], root_ctx):
        folder = out / (owner[path[1]] if len(path) > 1 else CORE)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{'-'.join(path)}.1"
        target.write_text(page(path, command, ctx, version, date))
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the pages into, one subfolder per distribution")
    parser.add_argument("--version", required=True, help="the version the pages' footer names")
    parser.add_argument("--date", required=True, help="the date the pages' footer names (YYYY-MM-DD)")
    args = parser.parse_args()
    for path in write_pages(args.out, args.version, args.date):
        print(path)


if __name__ == "__main__":
    main()
