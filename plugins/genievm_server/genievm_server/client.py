"""``genievm policies``: manage the server's policies through its API (create from a JSON file, list, show,
enable, disable, run-now, delete).

The server and the token: ``--server URL`` (or ``GENIEVM_SERVER``, default http://127.0.0.1:8765) and
``GENIEVM_SERVER_TOKEN`` or ``--token-file``; ``--cacert`` for a server whose certificate a private CA signed.
An error the server answers is printed as its message, and the command exits with the error's exit code.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from genievm_core.errors import ConfigError, GenieVMError
from genievm_core.models.user_files import read_user_file, text_of

__all__ = ["ServerError", "policies_app"]

SERVER_ENV = "GENIEVM_SERVER"
TOKEN_ENV = "GENIEVM_SERVER_TOKEN"
DEFAULT_SERVER = "http://127.0.0.1:8765"

policies_app = typer.Typer(help="Policies of a GenieVM server (through its API).", no_args_is_help=True)


class ServerError(GenieVMError):
    """The server's answer to a request: its message, and the exit code of its error's class."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Client:
    def __init__(self, server: str | None, token_file: Path | None, cacert: Path | None) -> None:
        self.base = (server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/") + "/api/v1"
        if token_file is not None:
            token = text_of(
                read_user_file(token_file, what="token file", limit=4096), token_file, what="token file"
            ).strip()
        else:
            token = os.environ.get(TOKEN_ENV, "")
        if not token:
            raise ConfigError(f"invalid configuration: token: set {TOKEN_ENV} or give --token-file")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=cacert) if cacert is not None else True

    def call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        try:
            response = httpx.request(
                method, self.base + path, json=body, headers=self.headers, verify=self.verify, timeout=60
            )
        except httpx.HTTPError as exc:
            raise ConfigError(f"invalid configuration: --server: cannot reach {self.base}: {exc}") from None
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            raise ServerError(f"server answered {response.status_code} without JSON", 1) from None
        if response.is_error:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise ServerError(str(error.get("message", response.reason_phrase)), int(error.get("exit", 1)))
        return data


Server = Annotated[str | None, typer.Option("--server", help=f"server URL (or {SERVER_ENV})", metavar="URL")]
TokenFile = Annotated[Path | None, typer.Option("--token-file", help=f"API token file (or {TOKEN_ENV})")]
CACert = Annotated[Path | None, typer.Option("--cacert", help="CA certificate that signed the server's (PEM)")]


def _print(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@policies_app.command("create")
def create(
    file: Annotated[Path, typer.Argument(help="the policy as JSON")],
    server: Server = None,
    token_file: TokenFile = None,
    cacert: CACert = None,
) -> None:
    """Create a policy from a JSON file."""
    text = text_of(read_user_file(file, what="policy file", limit=1 << 20), file, what="policy file")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid configuration: {file}: not JSON: {exc}") from None
    _print(_Client(server, token_file, cacert).call("POST", "/policies", body))


@policies_app.command("list")
def list_(server: Server = None, token_file: TokenFile = None, cacert: CACert = None) -> None:
    """Every policy: name, enabled, schedule."""
    for row in _Client(server, token_file, cacert).call("GET", "/policies"):
        schedule = row["spec"]["schedule"]
        state = "enabled" if row["enabled"] else "disabled"
        sys.stdout.write(f"{row['name']}\t{state}\t{schedule['cron']} ({schedule['timezone']})\n")


@policies_app.command("show")
def show(name: str, server: Server = None, token_file: TokenFile = None, cacert: CACert = None) -> None:
    """One policy, as JSON."""
    _print(_Client(server, token_file, cacert).call("GET", f"/policies/{name}"))


@policies_app.command("enable")
def enable(name: str, server: Server = None, token_file: TokenFile = None, cacert: CACert = None) -> None:
    """Run the policy on its schedule."""
    _Client(server, token_file, cacert).call("POST", f"/policies/{name}/enable")


@policies_app.command("disable")
def disable(name: str, server: Server = None, token_file: TokenFile = None, cacert: CACert = None) -> None:
    """Stop running the policy on its schedule."""
    _Client(server, token_file, cacert).call("POST", f"/policies/{name}/disable")


@policies_app.command("run-now")
def run_now(name: str, server: Server = None, token_file: TokenFile = None, cacert: CACert = None) -> None:
    """Queue a backup of each of the policy's VMs now."""
    _print(_Client(server, token_file, cacert).call("POST", f"/policies/{name}/run-now"))


@policies_app.command("delete")
def delete(name: str, server: Server = None, token_file: TokenFile = None, cacert: CACert = None) -> None:
    """Delete the policy (its backups stay)."""
    _Client(server, token_file, cacert).call("DELETE", f"/policies/{name}")
