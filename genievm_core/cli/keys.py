"""``genievm repo key``: list, add, remove and change a repository's passphrases; export its key file."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from genievm_core.choices import MAX_SECONDS
from genievm_core.cli.common import (
    JsonOption,
    PassphraseFileOption,
    RepoOption,
    emit_json,
    out_console,
    repository_argument,
    state,
)
from genievm_core.errors import ConfigError, PassphraseRequiredError
from genievm_core.models.user_files import read_user_file, text_of
from genievm_core.repository import Repository
from genievm_core.repository.key_slots import add_key, change_passphrase, export_key, list_keys, remove_key

app = typer.Typer(help="List, add, remove and change passphrases; export the key file.", no_args_is_help=True)

NEW_PASSPHRASE_ENV = "GENIEVM_NEW_PASSPHRASE"
MAX_PASSPHRASE = 4 << 10
UrlArgument = Annotated[
    str | None, typer.Argument(metavar="[URL]", help="path, file:// or s3:// URL (or give --repo)", show_default=False)
]
NewPassphraseFileOption = Annotated[
    Path | None,
    typer.Option(help=f"file holding the new passphrase (or {NEW_PASSPHRASE_ENV}, or a prompt)", metavar="PATH"),
]
LockWait = Annotated[
    float,
    typer.Option(min=0, max=MAX_SECONDS, metavar="SECONDS", help="seconds to wait for running jobs to finish"),
]


def new_passphrase(path: Path | None) -> str:
    """The new passphrase: from ``path``, else ``GENIEVM_NEW_PASSPHRASE``, else asked twice on a terminal."""
    if path is not None:
        data = read_user_file(path, what="new passphrase file", limit=MAX_PASSPHRASE)
        passphrase = text_of(data, path, what="new passphrase file").rstrip("\n")
    elif os.environ.get(NEW_PASSPHRASE_ENV):
        passphrase = os.environ[NEW_PASSPHRASE_ENV]
    elif sys.stdin.isatty():
        passphrase = getpass.getpass("New passphrase: ")
        if passphrase and getpass.getpass("Repeat the new passphrase: ") != passphrase:
            raise ConfigError("invalid configuration: new passphrase: the two entries differ")
    else:
        passphrase = ""
    if not passphrase:
        raise PassphraseRequiredError(
            f"a new passphrase is needed: set {NEW_PASSPHRASE_ENV}, give a non-empty --new-passphrase-file, "
            "or run on a terminal"
        )
    return passphrase


def _open(ctx: typer.Context, url: str | None, passphrase_file: Path | None) -> Repository:
    return state(ctx).open_repository(url, passphrase_file)


@app.command("list")
def list_command(
    ctx: typer.Context,
    url: UrlArgument = None,
    repo_option: RepoOption = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the repository's keys: id, label, when added; * marks the passphrase given."""
    keys = list_keys(_open(ctx, repository_argument(url, repo_option), passphrase_file))
    if json_output:
        emit_json(
            [
                {"id": k.key_id, "label": k.label, "added_at": k.added_at, "scrypt_n": k.scrypt_n, "current": k.current}
                for k in keys
            ]  # fmt: skip
        )
        return
    for k in keys:
        added = k.added_at.isoformat() if k.added_at else "(when the repository was made)"
        mark = "*" if k.current else " "
        out_console.print(f"{mark} {k.key_id}  {k.label or '-':<20} {added}", highlight=False, markup=False)


@app.command("add")
def add(
    ctx: typer.Context,
    url: UrlArgument = None,
    repo_option: RepoOption = None,
    label: Annotated[str | None, typer.Option(help="whose passphrase it is, for key list", metavar="TEXT")] = None,
    passphrase_file: PassphraseFileOption = None,
    new_passphrase_file: NewPassphraseFileOption = None,
    lock_wait: LockWait = 10.0,
    json_output: JsonOption = False,
) -> None:
    """Add a passphrase that opens the repository (the data is not rewritten)."""
    if label is not None and not (0 < len(label) <= 100 and label.isprintable()):
        raise ConfigError("invalid configuration: --label: 1 to 100 printable characters")
    repo = _open(ctx, repository_argument(url, repo_option), passphrase_file)
    passphrase = new_passphrase(new_passphrase_file)
    with repo.lock("exclusive", "key add", timeout=lock_wait):
        new_id = add_key(repo, passphrase, label)
    _done(json_output, repo, new_id, f"added key {new_id} to repository {repo.url}")


@app.command("remove")
def remove(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="the key's id, from genievm repo key list")],
    repo_option: RepoOption = None,
    passphrase_file: PassphraseFileOption = None,
    lock_wait: LockWait = 10.0,
    json_output: JsonOption = False,
) -> None:
    """Remove a passphrase: it no longer opens the repository (give another one to open it)."""
    repo = _open(ctx, repo_option, passphrase_file)
    with repo.lock("exclusive", "key remove", timeout=lock_wait):
        remove_key(repo, key_id)
    _done(json_output, repo, key_id, f"removed key {key_id} from repository {repo.url}")


@app.command("passwd")
def passwd(
    ctx: typer.Context,
    url: UrlArgument = None,
    repo_option: RepoOption = None,
    passphrase_file: PassphraseFileOption = None,
    new_passphrase_file: NewPassphraseFileOption = None,
    lock_wait: LockWait = 10.0,
    json_output: JsonOption = False,
) -> None:
    """Change the passphrase given to a new one (the data is not rewritten; the old one stops opening it)."""
    repo = _open(ctx, repository_argument(url, repo_option), passphrase_file)
    passphrase = new_passphrase(new_passphrase_file)
    with repo.lock("exclusive", "key passwd", timeout=lock_wait):
        new_id = change_passphrase(repo, passphrase)
    _done(json_output, repo, new_id, f"changed the passphrase of repository {repo.url} (now key {new_id})")


@app.command("export")
def export(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="PATH", help="the key file to write (it must not exist)")],
    repo_option: RepoOption = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write the repository's master key to a new file (mode 0600), for safekeeping: it opens the
    repository without a passphrase (genievm --key-file PATH), so keep it as safe as the data."""
    repo = _open(ctx, repo_option, passphrase_file)
    data = export_key(repo)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"invalid configuration: key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _done(json_output, repo, None, f"wrote the key file of repository {repo.url} to {path}")


def _done(json_output: bool, repo: Repository, key: str | None, line: str) -> None:
    if json_output:
        emit_json({"url": repo.url, "key": key})
    else:
        out_console.print(line, highlight=False, markup=False)
