"""``genievm server``: run the server (the default), and ``genievm server token`` to manage its API tokens."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from genievm_core.cli.common import err_console, state
from genievm_server.settings import ServerSettings, load_settings
from genievm_server.store import ROLES, Role, Store

__all__ = ["server_app"]

server_app = typer.Typer(
    help="Run the GenieVM server: policies and schedules, the REST API, metrics.", no_args_is_help=False
)
token_app = typer.Typer(
    help="API tokens of the server (stored hashed; a new one is printed once).", no_args_is_help=True
)
server_app.add_typer(token_app, name="token")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="server settings (JSON)", metavar="PATH")]
DatabaseOption = Annotated[
    str | None, typer.Option("--database", help="SQLAlchemy URL (default: server.sqlite beside the job registry)")
]


def _settings(ctx: typer.Context, config: Path | None, **overrides: Any) -> ServerSettings:
    job_db = state(ctx).job_db  # --job-db or GENIEVM_JOB_DB, unless the settings name one
    settings = load_settings(config, **overrides)
    if settings.job_db is None and job_db is not None:
        settings = settings.model_copy(update={"job_db": job_db})
    return settings


@server_app.callback(invoke_without_command=True)
def server(
    ctx: typer.Context,
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="port (default 8765)")] = None,
    cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM)", metavar="PATH")] = None,
    key: Annotated[Path | None, typer.Option(help="TLS private key (PEM)", metavar="PATH")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="allow a non-loopback address without TLS")] = False,
    database: DatabaseOption = None,
) -> None:
    """Run the GenieVM server until stopped (Ctrl-C, SIGTERM): the REST API under /api/v1, /metrics, the scheduler."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(
        ctx, config, host=host, port=port, cert=cert, key=key, insecure=insecure or None, database=database
    )
    settings.check_listen()
    import uvicorn  # only to serve: `genievm server token` needs none of it

    from genievm_server.app import create_app

    app = create_app(settings, disabled_plugins=tuple(state(ctx).disabled_plugins))
    for signum in (signal.SIGINT, signal.SIGTERM):  # uvicorn stops on them and raises them again after:
        signal.signal(signum, lambda *_: None)  # a clean stop then, not the CLI's "interrupted"
    scheme = "https" if settings.cert else "http"
    err_console.print(f"genievm: server at {scheme}://{settings.host}:{settings.port}/api/v1", highlight=False)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.cert,
        ssl_keyfile=settings.key,
        log_level="warning",
        server_header=False,
    )


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
    name: Annotated[str, typer.Option(help="what the token is for")] = "",
    config: ConfigOption = None,
    database: DatabaseOption = None,
) -> None:
    """Create an API token and print it (once: only its hash is stored)."""
    if role not in ROLES:
        from genievm_core.errors import ConfigError

        raise ConfigError(f"invalid configuration: --role: {role!r} is not one of {', '.join(ROLES)}")
    store = Store(_settings(ctx, config, database=database).database_url)
    try:
        row, token = store.create_token(_role(role), name)
    finally:
        store.close()
    err_console.print(f"genievm: token {row.id} ({row.role}) created; it is shown this once", highlight=False)
    sys.stdout.write(token + "\n")


@token_app.command("list")
def token_list(ctx: typer.Context, config: ConfigOption = None, database: DatabaseOption = None) -> None:
    """The tokens: id, role, name, created, last used (never the tokens themselves)."""
    store = Store(_settings(ctx, config, database=database).database_url)
    try:
        rows = store.tokens()
    finally:
        store.close()
    sys.stdout.write(json.dumps([vars(r) for r in rows], indent=2) + "\n")


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context, token_id: str, config: ConfigOption = None, database: DatabaseOption = None
) -> None:
    """Revoke a token by its id: it is refused from now on."""
    store = Store(_settings(ctx, config, database=database).database_url)
    try:
        store.revoke_token(token_id)
    finally:
        store.close()
    err_console.print(f"genievm: token {token_id} revoked", highlight=False)


def _role(value: str) -> Role:
    for role in ROLES:
        if role == value:
            return role
    raise AssertionError(value)
