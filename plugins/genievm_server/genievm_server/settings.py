"""The server's settings: one pydantic model, read from ``server.json`` (``--config``) with options on top.

Secrets never live in the API: a repository's passphrase comes from a file or an environment variable
of the server named here, and a provider's options (a vSphere password among them) are read here only.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genievm_core.errors import ConfigError
from genievm_core.jobs import default_job_db

__all__ = [
    "EmailSettings",
    "ProviderSettings",
    "RepositorySettings",
    "ServerSettings",
    "WebhookSettings",
    "load_settings",
]

DEFAULT_PORT = 8765


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RepositorySettings(_Model):
    """A repository the server writes to, by name; its passphrase from a file or a variable of the server."""

    url: str = Field(min_length=1)
    passphrase_file: Path | None = None
    passphrase_env: str | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict)
    max_concurrent: int | None = Field(default=None, ge=1)  # scheduled backups into it at once


class ProviderSettings(_Model):
    """A hypervisor the server backs up from, by name: its plugin and providerOptions (never shown by the API)."""

    plugin: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    max_concurrent: int | None = Field(default=None, ge=1)  # scheduled backups from its host at once


class WebhookSettings(_Model):
    """A URL that is sent a JSON POST when a job ends (on failure; on success too when asked); a POST that fails
    is tried ``retries`` times more, ``backoff`` seconds after the first failure, then twice as long each time."""

    url: str = Field(pattern=r"^https?://")
    on: tuple[Literal["failure", "success"], ...] = ("failure",)
    retries: int = Field(default=3, ge=0, le=10, description="more tries after a failed POST (no answer, 5xx, 429)")
    backoff: float = Field(default=5.0, ge=0, le=300, description="seconds before the first retry; doubled each time")


class EmailSettings(_Model):
    """An e-mail to ``to`` through an SMTP server when a job ends as ``on`` asks; the password (if any) from
    a file or a variable of the server."""

    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(min_length=3)
    to: tuple[str, ...] = Field(min_length=1)
    on: tuple[Literal["failure", "success"], ...] = ("failure",)
    starttls: bool = False
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None

    def password(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text().rstrip("\n")
        return os.environ.get(self.password_env) if self.password_env else None


class ServerSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    cert: Path | None = None  # TLS certificate (PEM); with key
    key: Path | None = None
    insecure: bool = False  # allow a non-loopback address without TLS
    database: str | None = None  # a SQLAlchemy URL; default: server.sqlite beside the job registry
    job_db: Path | None = None  # default: the job registry the CLI uses
    repositories: dict[str, RepositorySettings] = Field(default_factory=dict)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    webhooks: tuple[WebhookSettings, ...] = ()
    email: tuple[EmailSettings, ...] = ()
    restore_root: Path | None = None  # restores to a folder write only under it (none: no such restores)
    max_concurrent_jobs: int = Field(default=2, ge=1, le=256)
    scheduler_interval: float = Field(default=30.0, gt=0, description="seconds between two looks at the schedules")
    lock_wait: float = Field(default=600.0, ge=0, description="seconds a job waits for a conflicting repository lock")
    retry_backoff: float = Field(default=300.0, ge=0, description="seconds before a failed VM's first retry")
    broker: str | None = Field(default=None, description="a Redis URL: scheduled backups go to the workers")

    @property
    def database_url(self) -> str:
        if self.database:
            return self.database
        return f"sqlite:///{(self.job_db or default_job_db()).parent / 'server.sqlite'}"

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check_listen(self) -> None:
        """Refuse TLS half-given, and a non-loopback address without TLS unless ``insecure``."""
        if (self.cert is None) != (self.key is None):
            raise ConfigError("invalid configuration: --cert and --key: give both or neither")
        if self.cert is None and not self.loopback and not self.insecure:
            raise ConfigError(
                f"invalid configuration: --host {self.host}: not a loopback address and no TLS "
                "(give --cert and --key, or --insecure)"
            )

    def restore_folder(self, path: str) -> Path:
        """``path`` as a folder under ``restore_root``; ConfigError for any other."""
        if self.restore_root is None:
            raise ConfigError("invalid configuration: restore_path: the server's settings have no restore_root")
        root = self.restore_root.resolve()
        folder = (root / path).resolve()
        if folder != root and root not in folder.parents:
            raise ConfigError(f"invalid configuration: restore_path: {path} is not under the restore_root {root}")
        return folder

    def passphrase(self, repository: str) -> str | None:
        """The repository's passphrase from the server's file or environment (None: unencrypted)."""
        settings = self.repositories[repository]
        if settings.passphrase_file is not None:
            try:
                return settings.passphrase_file.read_text().rstrip("\n")
            except OSError as exc:
                raise ConfigError(
                    f"invalid configuration: repositories.{repository}.passphrase_file: cannot read "
                    f"{settings.passphrase_file}: {exc.strerror}"
                ) from None
        if settings.passphrase_env is not None:
            value = os.environ.get(settings.passphrase_env)
            if not value:
                raise ConfigError(
                    f"invalid configuration: repositories.{repository}.passphrase_env: {settings.passphrase_env} "
                    "is not set"
                )
            return value
        return None


def load_settings(path: Path | None, **overrides: Any) -> ServerSettings:
    """The settings of ``path`` (JSON), the options that were given (not None) on top."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"invalid configuration: --config: cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid configuration: --config: {path} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"invalid configuration: --config: {path} is not a JSON object")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServerSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"invalid configuration: {where}: {first['msg']}") from None
