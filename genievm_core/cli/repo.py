"""``genievm repo``: create, describe and upgrade repositories."""

from __future__ import annotations

from typing import Annotated

import typer

from genievm_core.cli.common import (
    JsonOption,
    PassphraseFileOption,
    emit_json,
    out_console,
    passphrase_source,
    state,
)
from genievm_core.errors import ConfigError
from genievm_core.repository import DEFAULT_CHUNK_SIZE

app = typer.Typer(help="Create and describe repositories.", no_args_is_help=True)


@app.command("init")
def init(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="path, file:// or s3:// URL")],
    encryption: Annotated[str, typer.Option(help="aes-256-gcm or none")] = "aes-256-gcm",
    chunk_size: Annotated[int, typer.Option(help="bytes, a power of two")] = DEFAULT_CHUNK_SIZE,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a new, empty repository."""
    if encryption not in ("aes-256-gcm", "none"):
        raise ConfigError(f"invalid configuration: encryption: {encryption!r} is not aes-256-gcm or none")
    st = state(ctx)
    st.open_storage(url)  # an unknown scheme or bad option is refused before the passphrase is asked
    passphrase = passphrase_source(passphrase_file, confirm=True)() if encryption != "none" else None
    repo = st.init_repository(url, passphrase=passphrase, chunk_size=chunk_size)
    if json_output:
        emit_json(repo.config.model_dump(mode="json", exclude={"encryption"}) | {"url": repo.url})
    else:
        out_console.print(
            f"created repository {repo.url} (id {repo.config.repository_id}, "
            f"chunks of {repo.chunk_size} bytes, encryption {encryption})",
            highlight=False,
        )


@app.command("info")
def info(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Argument(envvar="GENIEVM_BACKUP_PATH")] = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a repository's format, chunk size and encryption."""
    repo = state(ctx).open_repository(url, passphrase_file)
    data = repo.config.model_dump(mode="json", exclude={"encryption"}) | {
        "url": repo.url,
        "encryption": repo.config.encryption.algorithm if repo.config.encryption else "none",
        "backups": len(repo.backup_ids()),
    }
    if json_output:
        emit_json(data)
    else:
        for key, value in data.items():
            out_console.print(f"{key:>16}: {value}", highlight=False)


@app.command("upgrade")
def upgrade(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Argument(envvar="GENIEVM_BACKUP_PATH")] = None,
    passphrase_file: PassphraseFileOption = None,
    lock_wait: Annotated[float, typer.Option(help="seconds to wait for running jobs to finish")] = 10.0,
    json_output: JsonOption = False,
) -> None:
    """Bring a repository's config to the current format (format 2: authenticated, NFC passphrases)."""
    st = state(ctx)
    repo = st.open_repository(url, passphrase_file)
    before = repo.config.format_version
    changed = st.upgrade_repository(repo, passphrase_file, lock_wait=lock_wait)
    after = repo.config.format_version
    if json_output:
        emit_json({"url": repo.url, "format_version_before": before, "format_version": after, "upgraded": changed})
    elif changed:
        out_console.print(f"upgraded repository {repo.url} from format {before} to {after}", highlight=False)
    else:
        out_console.print(f"repository {repo.url} is already at format {after}", highlight=False)
