"""The S3 target's URL and options: what the user may set, checked once, with one-line errors.

``s3://bucket/prefix`` names the bucket and the folder the repository lives in
(no prefix: the bucket's root). Everything else comes from the storage
options (``storageOptions`` of a job config, ``GENIEVM_STORAGE_OPTIONS``,
``genievm --storage-option KEY=VALUE``); names are snake_case (camelCase is
accepted too). Credentials given here are ``SecretStr``: they never show in a
repr, a log event or an error message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel

from genievm_core.engine import default_workers
from genievm_core.errors import ConfigError
from genievm_core.plugin.options import parse_options as check_options

__all__ = ["MIN_PART_SIZE", "S3Location", "S3Options", "parse_options", "parse_url"]

MIB = 1 << 20
MIN_PART_SIZE = 5 * MIB  # S3's smallest part of a multipart upload (but the last)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or a folder without slashes at either end

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_url(url: str) -> S3Location:
    """``s3://bucket`` or ``s3://bucket/some/prefix``; ConfigError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"invalid configuration: repository URL {url!r}: expected s3://BUCKET/PREFIX")
    if parsed.query or parsed.fragment or parsed.params or "@" in parsed.netloc:
        raise ConfigError(
            f"invalid configuration: repository URL {url!r}: give endpoint, region and credentials "
            "as storage options, not in the URL"
        )
    if not _BUCKET.match(parsed.netloc) or ".." in parsed.netloc:
        raise ConfigError(f"invalid configuration: repository URL {url!r}: {parsed.netloc!r} is not an S3 bucket name")
    prefix = parsed.path.strip("/")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/") if prefix):
        raise ConfigError(f"invalid configuration: repository URL {url!r}: the prefix {prefix!r} is not a plain path")
    return S3Location(parsed.netloc, prefix)


class S3Options(BaseModel):
    """Every storage option the S3 target knows (docs/user-guide.md, "Repositories in S3")."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    # where
    endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint; default AWS")
    region: str | None = Field(default=None, description="region; default from the AWS configuration")
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    verify_tls: bool = Field(default=True, description="verify the endpoint's TLS certificate")
    ca_bundle: str | None = Field(default=None, description="PEM file of CA certificates to verify with")
    # who: the standard AWS chain unless given here
    profile: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    # how
    max_attempts: int = Field(default=8, ge=1, le=50, description="tries per request, the first included")
    retry_mode: Literal["standard", "adaptive"] = "standard"
    max_pool_connections: int = Field(default_factory=lambda: default_workers() + 4, ge=1, le=1024)
    request_checksums: Literal["when_supported", "when_required"] = Field(
        default="when_supported", description="when_required for S3-compatible stores that refuse CRC checksums"
    )
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    list_page_size: int = Field(default=1000, ge=1, le=1000, description="keys per listing request (MaxKeys)")
    multipart_threshold: int = Field(default=64 * MIB, ge=MIN_PART_SIZE, description="bytes; larger puts are multipart")
    multipart_chunksize: int = Field(default=16 * MIB, ge=MIN_PART_SIZE, description="bytes per part")
    # immutability and encryption at rest
    object_lock_mode: Literal["governance", "compliance"] | None = None
    object_lock_days: int | None = Field(default=None, ge=1, le=36500)
    object_lock_skip_prefixes: tuple[str, ...] = Field(
        default=("locks/",), description="keys never put under retention: the repository's lock objects"
    )
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None

    @field_validator("object_lock_skip_prefixes", mode="before")
    @classmethod
    def _prefix_list(cls, value: Any) -> Any:
        """From ``--storage-option`` a list comes as text: a JSON list, or prefixes separated by commas."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            return json.loads(value)
        return tuple(p.strip() for p in value.split(",") if p.strip())

    @model_validator(mode="after")
    def _consistent(self) -> S3Options:
        if (self.object_lock_mode is None) != (self.object_lock_days is None):
            raise ValueError("object_lock_mode and object_lock_days go together")
        if self.sse_kms_key_id is not None and self.sse != "aws:kms":
            raise ValueError("sse_kms_key_id needs sse=aws:kms")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        if self.profile is not None and self.access_key_id is not None:
            raise ValueError("give a profile or access keys, not both")
        return self


def parse_options(options: Mapping[str, Any]) -> S3Options:
    """Validate the storage options; one line naming the option (never its value) when one is wrong."""
    return check_options(S3Options, options, "configuration: S3 storage options")
