"""``genievm repo``: create, describe, upgrade and unlock repositories."""

from __future__ import annotations

from typing import Annotated

import typer

from genievm_core.choices import MAX_SECONDS
from genievm_core.cli import copy, keys
from genievm_core.cli.common import (
    JsonOption,
    PassphraseFileOption,
    RepoOption,
    emit_json,
    err_console,
    human_size,
    out_console,
    plural,
    ratio,
    repository_argument,
    state,
)
from genievm_core.errors import ConfigError
from genievm_core.repository import DEFAULT_CHUNK_SIZE
from genievm_core.repository.lock import describe_lock
from genievm_core.repository.stats import RepositoryStats, repository_stats

app = typer.Typer(
    help="Create, copy, upgrade and unlock repositories; manage their keys.", no_args_is_help=True
)
app.add_typer(keys.app, name="key")
app.command("copy")(copy.copy)
UrlArgument = Annotated[
    str | None, typer.Argument(metavar="[URL]", help="path, file:// or s3:// URL (or give --repo)", show_default=False)
]


@app.command("init")
def init(
    ctx: typer.Context,
    url: UrlArgument = None,
    repo_option: RepoOption = None,
    encryption: Annotated[
        str, typer.Option(metavar="aes-256-gcm|none", help="encrypt chunks, indexes and manifests, or not")
    ] = "aes-256-gcm",
    chunk_size: Annotated[
        int,
        typer.Option(min=4096, max=64 << 20, metavar="BYTES", help="chunk size: a power of two from 4 KiB to 64 MiB"),
    ] = DEFAULT_CHUNK_SIZE,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a new, empty repository."""
    if encryption not in ("aes-256-gcm", "none"):
        raise ConfigError(f"invalid configuration: encryption: {encryption!r} is not aes-256-gcm or none")
    st = state(ctx)
    url = repository_argument(url, repo_option)
    st.open_storage(url)  # an unknown scheme or bad option is refused before the passphrase is asked
    passphrase = st.passphrase_source(passphrase_file, confirm=True)() if encryption != "none" else None
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
    url: UrlArgument = None,
    repo_option: RepoOption = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a repository's format, chunk size and encryption."""
    repo = state(ctx).open_repository(repository_argument(url, repo_option), passphrase_file)
    stats = repository_stats(repo)
    data = repo.config.model_dump(mode="json", exclude={"encryption"}) | {
        "url": repo.url,
        "encryption": repo.config.encryption.algorithm if repo.config.encryption else "none",
    }
    if json_output:
        emit_json(data | stats.to_json())
        return
    for key, value in data.items():
        out_console.print(f"{key:>16}: {value}", highlight=False)
    _print_stats(stats)


@app.command("stats")
def stats(
    ctx: typer.Context,
    url: UrlArgument = None,
    repo_option: RepoOption = None,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show what the repository holds and saves: sizes, chunks, dedup and compression ratios (reads every index)."""
    repo = state(ctx).open_repository(repository_argument(url, repo_option), passphrase_file)
    with repo.read_lock("stats"):
        numbers = repository_stats(repo, deep=True)
    if json_output:
        emit_json({"url": repo.url} | numbers.to_json())
        return
    _print_stats(numbers)
    assert numbers.unique_chunks is not None and numbers.unique_size is not None
    out_console.print(
        f"{'unique chunks':>16}: {numbers.unique_chunks} ({human_size(numbers.unique_size)}); "
        f"dedup {ratio(numbers.backups_size, numbers.unique_size)}, "
        f"compression {ratio(numbers.unique_size, numbers.stored_size)}",
        highlight=False,
    )


def _print_stats(numbers: RepositoryStats) -> None:
    lines = {
        "backups": f"{numbers.backups} of {plural(numbers.vms, 'VM')}"
        + (f", {numbers.damaged_manifests} unreadable (see genievm verify)" if numbers.damaged_manifests else ""),
        "chunks": f"{numbers.chunk_objects} stored",
        "size": f"{human_size(numbers.backups_size)} of backups, {human_size(numbers.stored_size)} stored "
        f"({numbers.space_saved:.1%} saved)",
    }
    for key, value in lines.items():
        out_console.print(f"{key:>16}: {value}", highlight=False)


@app.command("upgrade")
def upgrade(
    ctx: typer.Context,
    url: UrlArgument = None,
    repo_option: RepoOption = None,
    passphrase_file: PassphraseFileOption = None,
    lock_wait: Annotated[
        float,
        typer.Option(min=0, max=MAX_SECONDS, metavar="SECONDS", help="seconds to wait for running jobs to finish"),
    ] = 10.0,
    json_output: JsonOption = False,
) -> None:
    """Bring a repository's config to the current format (format 2: authenticated, NFC passphrases).

    Also adds the features a new repository has (patched-chunks: older GenieVM versions then refuse it),
    and enters the backups made before the repository had a backup log into it.
    """
    st = state(ctx)
    repo = st.open_repository(repository_argument(url, repo_option), passphrase_file)
    before, features_before = repo.config.format_version, repo.config.features
    changed, logged = st.upgrade_repository(repo, passphrase_file, lock_wait=lock_wait)
    after = repo.config.format_version
    added = [f for f in repo.config.features if f not in features_before]
    if json_output:
        emit_json(
            {"url": repo.url, "format_version_before": before, "format_version": after, "upgraded": changed,
             "features_added": added, "backups_logged": logged}  # fmt: skip
        )
        return
    if before != after:
        out_console.print(f"upgraded repository {repo.url} from format {before} to {after}", highlight=False)
    if added:
        features = ", ".join(added)
        out_console.print(f"added {features} to repository {repo.url}: older GenieVM versions refuse it now",
                          highlight=False)  # fmt: skip
    if not changed:
        out_console.print(f"repository {repo.url} is already at format {after}", highlight=False)
    if logged:
        out_console.print(f"entered {plural(logged, 'backup')} in the backup log", highlight=False)


@app.command("unlock")
def unlock(
    ctx: typer.Context,
    url: UrlArgument = None,
    repo_option: RepoOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="remove every lock, also those of running jobs (dangerous)")
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove stale locks: of processes gone from this host, or not refreshed by another host for too long."""
    st = state(ctx)
    repo = st.open_repository(repository_argument(url, repo_option), passphrase_file)
    if force:
        err_console.print(
            "genievm: warning: --force removes every lock, also those of running jobs: a prune or gc running "
            "beside a backup may then delete what the backup writes",
            highlight=False,
            markup=False,
        )
    removed, kept = st.unlock(repo, force=force)
    if json_output:
        emit_json({"url": repo.url, "removed": removed, "kept": kept})
        return
    for holder in removed:
        out_console.print(f"removed lock {holder['key']}: {describe_lock(holder)}", highlight=False)
    for holder in kept:
        out_console.print(f"kept lock {holder['key']} (not stale): {describe_lock(holder)}", highlight=False)
    out_console.print(f"{plural(len(removed), 'lock')} removed, {plural(len(kept), 'lock')} kept", highlight=False)
