"""Job configuration: what to back up or restore, and how.

Field names follow the seed's camelCase in JSON (``vmId``, ``backupPath``) and
snake_case in Python. ``load_config`` layers, lowest first: a JSON file,
environment variables ``GENIEVM_<FIELD>`` (``GENIEVM_COMPRESSION_LEVEL=3``),
then options given on the command line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from genievm_core.errors import ConfigError
from genievm_core.models.user_files import read_user_file, text_of

__all__ = ["BackupConfig", "DiskConfig", "RestoreConfig", "load_config"]

MAX_CONFIG = 4 << 20  # bytes of a job config file
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")


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
    retention_days: int | None = Field(default=None, ge=1, description="keep every backup of at most this age")
    max_backups: int | None = Field(default=None, ge=1, description="keep at most this many backups of the VM")
    keep_last: int | None = Field(default=None, ge=1, description="keep the newest N backups")
    keep_daily: int | None = Field(default=None, ge=1, description="keep the newest backup of each of N days")
    keep_weekly: int | None = Field(default=None, ge=1, description="keep the newest backup of each of N ISO weeks")
    keep_monthly: int | None = Field(default=None, ge=1, description="keep the newest backup of each of N months")
    prune_after_backup: bool = Field(default=False, description="apply the retention rules after each backup")
    enable_cbt: bool = Field(default=True, alias="enableCBT", description="use changed-block tracking where it exists")
    excluded_disks: tuple[str, ...] = Field(default=(), description="disk names not backed up")
    quiesce: bool = Field(default=False, description="freeze guest filesystems (guest agent) around the point in time")
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
    """Build ``model`` from a JSON file, then ``GENIEVM_*`` variables, then ``overrides``.

    Raises ConfigError with one line naming the field and the problem.
    """
    data: dict[str, Any] = {}
    if path is not None:
        text = text_of(read_user_file(Path(path), what="config file", limit=MAX_CONFIG), path, what="config file")
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not JSON: {exc}") from exc
        except RecursionError:  # arrays or objects nested beyond the parser's depth
            raise ConfigError(f"config file {path} is nested too deeply") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a JSON object")
        data.update({_python_name(model, key): value for key, value in loaded.items()})
    env = os.environ if environ is None else environ
    for name, field in model.model_fields.items():
        value = env.get("GENIEVM_" + name.upper())
        if value is not None:
            data[name] = _parse_env(value, field.annotation)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(model, exc)) from exc


def _python_name(model: type[_Model], key: str) -> str:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return name
    return key  # unknown: validation reports it


def _parse_env(value: str, annotation: Any) -> Any:
    """A list or mapping field takes JSON, or, for a list, comma-separated words."""
    text = str(annotation)
    if "tuple" not in text and "dict" not in text:
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, (list, dict)):
        return parsed
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _one_line(model: type[_Model], exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(_alias(model, str(part)) for part in err["loc"]) or model.__name__
        problems.append(f"{loc}: {err['msg']}")
    return f"invalid {model.__name__}: " + "; ".join(problems)


def _alias(model: type[_Model], name: str) -> str:
    field = model.model_fields.get(name)
    return field.alias if field is not None and field.alias else name
