"""GenieVM storage target for repositories in an S3-compatible object store (AWS S3, MinIO, Ceph RGW).

Install the distribution ``genievm-storage-s3``; its entry point ``s3`` in the
group ``genievm`` registers the scheme, so ``genievm repo init s3://bucket/prefix``
works. Options and credentials: docs/user-guide.md, "Repositories in S3".
The names below are imported on first use (boto3 is slow to import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genievm_storage_s3.options import S3Location, S3Options, parse_options, parse_url
    from genievm_storage_s3.storage import S3Storage, open_s3_storage

__all__ = ["S3Location", "S3Options", "S3Storage", "open_s3_storage", "parse_options", "parse_url"]

_HOME = {name: "options" for name in ("S3Location", "S3Options", "parse_options", "parse_url")} | {
    "S3Storage": "storage",
    "open_s3_storage": "storage",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"genievm_storage_s3.{_HOME[name]}"), name)
    raise AttributeError(f"module 'genievm_storage_s3' has no attribute {name!r}")
