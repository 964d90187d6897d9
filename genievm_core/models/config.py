"""Job configuration: what to back up or restore, and how.

Field names follow the seed's camelCase in JSON and TOML (``vmId``, ``backupPath``)
and snake_case in Python. ``load_config`` layers, lowest first: a config file
(JSON, or TOML when its name ends in ``.toml``), environment variables
``GENIEVM_<FIELD>`` (``GENIEVM_COMPRESSION_LEVEL=3``), then options given on the
command line; the layering is pydantic-settings' (its sources, in that order, in
``layering.py``, imported only when a file or a variable is there to layer).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from genievm_core.errors import ConfigError
from genievm_core.models.user_files import read_user_file, text_of

__all__ = [
    "MAX_KEPT",
    "MAX_MBPS",
    "MAX_RETENTION_DAYS",
    "BackupConfig",
    "DiskConfig",
    "RestoreConfig",
    "load_config",
    "read_config_file",
]

MAX_CONFIG = 4 << 20  # bytes of a job config file
MAX_RETENTION_DAYS = 36500  # a hundred years
MAX_KEPT = 1_000_000  # backups a retention rule counts
MAX_MBPS = 1_000_000  # the highest bandwidth limit, in MB/s (a TB/s)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")


def _limit(what: str) -> Any:
    """A bandwidth limit field: MB/s, 0 or none for no limit."""
    return Field(default=None, ge=0, le=MAX_MBPS, allow_inf_nan=False, description=f"{what}; 0 or none: no limit")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class BackupConfig(_Model):
    """One backup of one VM."""

    vm_id: str = Field(min_length=1, description="VM id or name, as the provider knows it")
    backup_path: str = Field(min_length=1, description="repository: a path or a URL (file://, s3://)")
    backup_dir: Path | None = Field(default=None, description="local working folder for sockets and temporary files")
    provider: str = Field(default="image", description="provider plugin name")
    incremental: bool = Field(default=True, description="make an incremental when a parent exists")
    compression_level: int = Field(default=3, ge=1, le=22, description="zstd level")
    max_concurrent_disks: int = Field(default=2, ge=1, le=64)
    retention_days: int | None = Field(
        default=None, ge=1, le=MAX_RETENTION_DAYS, description="keep every backup of at most this age"
    )
    max_backups: int | None = Field(default=None, ge=1, le=MAX_KEPT, description="keep at most this many backups")
    keep_last: int | None = Field(default=None, ge=1, le=MAX_KEPT, description="keep the newest N backups")
    keep_daily: int | None = Field(
        default=None, ge=1, le=MAX_KEPT, description="keep the newest backup of each of N days"
    )
    keep_weekly: int | None = Field(
        default=None, ge=1, le=MAX_KEPT, description="keep the newest backup of each of N ISO weeks"
    )
    keep_monthly: int | None = Field(
        default=None, ge=1, le=MAX_KEPT, description="keep the newest backup of each of N months"
    )
    prune_after_backup: bool = Field(default=False, description="apply the retention rules after each backup")
    enable_cbt: bool = Field(default=True, alias="enableCBT", description="use changed-block tracking where it exists")
    excluded_disks: tuple[str, ...] = Field(default=(), description="disk names not backed up")
    quiesce: bool = Field(default=False, description="freeze guest filesystems (guest agent) around the point in time")
    bandwidth_limit_read: float | None = _limit("MB/s read from the VM's disks")
    bandwidth_limit_write: float | None = _limit("MB/s written to the storage target")
    provider_options: dict[str, Any] = Field(
        default_factory=dict, description="settings passed to the provider as they are"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="settings passed to the storage target as they are (S3 endpoint, ...)"
    )


class DiskConfig(_Model):
    """Where one disk of a backup is restored to."""

    name: str = Field(min_length=1, description="disk name in the backup (vda, disk0, ...)")
    target: str | None = Field(default=None, description="target path or volume; default under restorePath")
    format: str | None = Field(
        default=None, pattern=r"^(raw|qcow2)$", description="raw or qcow2; default: as backed up"
    )
    skip: bool = False

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a disk name is letters, digits and . _ @ + - only")
        return value


class RestoreConfig(_Model):
    """One restore of one backup."""

    vm_id: str = Field(min_length=1, description="VM whose backup is restored")
    backup_id: str = Field(default="latest", min_length=1, description="backup id, or 'latest'")
    backup_path: str = Field(min_length=1, description="repository: a path or a URL")
    restore_path: Path | None = Field(
        default=None, description="folder the restored disks are written into (unless each has a target)"
    )
    provider: str = Field(default="image")
    new_vm_name: str | None = None
    verify_after_restore: bool = True
    power_on_after_restore: bool = False
    force: bool = Field(default=False, description="overwrite existing targets")
    disk_configs: tuple[DiskConfig, ...] = ()
    bandwidth_limit_read: float | None = _limit("MB/s read from the repository")
    bandwidth_limit_write: float | None = _limit("MB/s written to the restored disks")
    provider_options: dict[str, Any] = Field(default_factory=dict)
    storage_options: dict[str, Any] = Field(default_factory=dict)


_Config = TypeVar("_Config", bound=_Model)


def load_config(
    model: type[_Config],
    *,
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> _Config:
    """Build ``model`` from a config file, then ``GENIEVM_*`` variables (``environ``, default the
    process's), then ``overrides`` (None values left out).

    Raises ConfigError with one line naming the field and the problem.
    """
    from_file = {} if path is None else read_config_file(Path(path))
    from_options = {k: v for k, v in (overrides or {}).items() if v is not None}
    env = os.environ if environ is None else environ
    try:
        if path is None and not names_a_field(model, env):  # the options alone: nothing to layer
            return model.model_validate(from_options)
        from genievm_core.models.layering import layered  # pydantic-settings: 50 ms of imports, when used

        return model.model_validate(layered(model, from_file, from_options, env))
    except ValidationError as exc:
        raise ConfigError(_one_line(model, exc)) from exc


def names_a_field(model: type[_Model], environ: Mapping[str, str]) -> bool:
    """Whether a variable of ``environ`` is ``GENIEVM_<FIELD>`` of one of ``model``'s fields (the layering's
    rule: upper-case names only)."""
    fields = {f"genievm_{name}" for name in model.model_fields}
    return any(name.isupper() and name.lower() in fields for name in environ)


def read_config_file(path: Path) -> dict[str, Any]:
    """The object a job config file holds: TOML when its name ends in ``.toml``, else JSON (at most 4 MiB)."""
    text = text_of(read_user_file(path, what="config file", limit=MAX_CONFIG), path, what="config file")
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not TOML: {exc}") from exc
        except RecursionError:
            raise ConfigError(f"config file {path} is nested too deeply") from None
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not JSON: {exc}") from exc
    except RecursionError:  # arrays or objects nested beyond the parser's depth
        raise ConfigError(f"config file {path} is nested too deeply") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return loaded


def _one_line(model: type[_Model], exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(_alias(model, str(part)) for part in err["loc"]) or model.__name__
        problems.append(f"{loc}: {err['msg']}")
    return f"invalid {model.__name__}: " + "; ".join(problems)


def _alias(model: type[_Model], name: str) -> str:
    field = model.model_fields.get(name)
    return field.alias if field is not None and field.alias else name
