"""The ``aws`` provider's options (``providerOptions``, or ``-o KEY=VALUE``), checked once before any AWS call.

There are no credential options: credentials come from boto3's own chain (the
environment, ``profile`` in the shared files, SSO, an instance or container
role), so none can reach a job config, a log or a manifest. docs/user-guide.md's
table of the options is rendered from this model, and a test keeps it so.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from genievm_core.repository.retry import DEFAULT_ATTEMPTS

__all__ = ["RESTORE_TARGETS", "AWSOptions"]

RESTORE_TARGETS = ("instance", "volumes", "snapshots")


class AWSOptions(BaseModel):
    """Every provider option the ``aws`` provider reads."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    # where and who
    region: str | None = Field(
        default=None, description="the AWS region; default boto3's (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's)"
    )
    profile: str | None = Field(default=None, description="a profile of the shared AWS files; default boto3's chain")
    endpoint_url: str | None = Field(
        default=None, description="one endpoint for EC2 and EBS instead of AWS's (a test server such as moto)"
    )
    # backups
    keep_snapshots: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="keep the newest N backups' snapshots of each instance as the base of the next incremental "
        "(`ListChangedBlocks`); 0: remove them after each backup",
    )
    block_threads: int = Field(
        default=8,
        ge=1,
        le=64,
        description="EBS direct calls in flight per disk: the blocks a chunk covers are read at once "
        "(a 4 MiB chunk: 8), restored blocks are sent so many at a time",
    )
    max_attempts: int = Field(
        default=DEFAULT_ATTEMPTS, ge=1, le=20, description="tries of each AWS call on throttling and transient errors"
    )
    snapshot_timeout_seconds: float = Field(
        default=3600, gt=0, description="how long a snapshot (or image, volume) may take to complete"
    )
    # restores
    restore_to: str = Field(
        default="instance",
        description="`instance` (snapshots, an AMI and a new instance), `volumes` (snapshots and volumes) "
        "or `snapshots`",
    )
    availability_zone: str | None = Field(
        default=None, description="restores: the zone of new volumes; default the instance's, or the subnet's"
    )
    instance_type: str | None = Field(
        default=None, description="restores: the new instance's type; default the backup's"
    )
    subnet_id: str | None = Field(default=None, description="restores: the new instance's subnet; default the backup's")
    security_group_ids: tuple[str, ...] | None = Field(
        default=None, description="restores: `sg-1,sg-2`, the new instance's groups; default the backup's"
    )
    key_name: str | None = Field(
        default=None, description="restores: the new instance's key pair; default the backup's"
    )
    encrypted: bool | None = Field(
        default=None,
        description="restores: encrypt the new snapshots and volumes; default as each backed-up volume was "
        "(a disk of another provider's backup: not encrypted)",
    )
    kms_key_id: str | None = Field(
        default=None,
        description="restores: the KMS key (id or ARN) of encrypted restores; default the backed-up volume's, "
        "else the account's EBS default key",
    )

    @field_validator("restore_to", mode="before")
    @classmethod
    def _restore_to(cls, value: Any) -> str:
        target = str(value).strip().lower()
        if target not in RESTORE_TARGETS:
            raise ValueError(f"must be one of {', '.join(RESTORE_TARGETS)}, not {target!r}")
        return target

    @field_validator("security_group_ids", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        """``sg-1,sg-2`` (from ``-o``), or a list (in a config file)."""
        if isinstance(value, str):
            return tuple(g.strip() for g in value.split(",") if g.strip())
        return value
