"""A storage target in an S3 bucket, under an optional prefix.

- put: one PutObject, which S3 makes visible whole or not at all; above
  ``multipart_threshold`` a multipart upload (boto3's transfer manager), which
  becomes visible only when completed and is aborted when a part fails.
- get, exists (HEAD), list (ListObjectsV2, every page), delete; ``delete_many``
  removes many keys with one DeleteObjects request per 1000.
- Object Lock: with ``object_lock_mode`` and ``object_lock_days`` every put
  (but the repository's lock objects) carries a retention date. A bucket with
  Object Lock is versioned, and a plain DELETE there only hides an object
  behind a delete marker, so in a versioned bucket a delete removes every
  version of the key; a version under retention stays, and the delete raises
  ObjectLockedError with the date it may go.
- Server-side encryption (SSE-S3 or SSE-KMS) is asked for on every put.
"""

from __future__ import annotations

import builtins
import io
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions as bce
from boto3.s3.transfer import TransferConfig

from genievm_core.errors import ObjectLockedError, StorageError, StoragePermissionError
from genievm_core.logging import get_logger
from genievm_core.repository.retry import retrying
from genievm_storage_s3.client import DENIED, NOT_FOUND, error_code, make_client, storage_error
from genievm_storage_s3.options import S3Location, S3Options, parse_options, parse_url

__all__ = ["S3Storage", "open_s3_storage"]

log = get_logger("genievm.storage.s3")
STREAM_ERRORS = (bce.ResponseStreamingError, bce.IncompleteReadError, bce.ReadTimeoutError, bce.ConnectionClosedError)


def _body_broke(exc: BaseException) -> bool:
    """The one failure of a get that botocore does not retry: the connection broke while the body came in."""
    return isinstance(exc, StorageError) and isinstance(exc.__cause__, STREAM_ERRORS)


def open_s3_storage(url: str, options: Mapping[str, Any]) -> S3Storage:
    """``s3://bucket/prefix`` with the storage options (docs/user-guide.md)."""
    return S3Storage(parse_url(url), parse_options(options))


class S3Storage:
    delete_batch = 1000  # most keys one DeleteObjects request may name
    retries_itself = True  # botocore retries throttling, 5xx and dropped connections (max_attempts)

    def __init__(self, location: S3Location, options: S3Options) -> None:
        self.location = location
        self.options = options
        self.url = location.url
        self.bucket = location.bucket
        self._root = f"{location.prefix}/" if location.prefix else ""
        self._client = make_client(options)
        self._transfer = TransferConfig(
            multipart_threshold=options.multipart_threshold,
            multipart_chunksize=options.multipart_chunksize,
            max_concurrency=max(1, min(4, options.max_pool_connections // 2)),
        )
        self._versioned: bool | None = None
        self._versioned_lock = threading.Lock()
        log.debug(
            "s3.open",
            url=self.url,
            endpoint=options.endpoint_url,
            region=options.region,
            object_lock=options.object_lock_mode,
            sse=options.sse,
        )

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r})"

    # ------------------------------------------------------------ the StorageTarget protocol

    def put(self, key: str, data: bytes | bytearray) -> None:
        s3key = self._key(key)
        extra = self._put_args(key)
        if len(data) < self.options.multipart_threshold:
            self._call(key, self._client.put_object, Bucket=self.bucket, Key=s3key, Body=bytes(data), **extra)
        else:
            upload = self._client.upload_fileobj
            self._call(key, upload, io.BytesIO(data), self.bucket, s3key, ExtraArgs=extra, Config=self._transfer)

    def get(self, key: str) -> bytes:
        """botocore retries the request; a body whose connection broke while it came in is asked for again
        under the core's retry policy, up to ``max_attempts`` tries in all."""
        s3key = self._key(key)
        for attempt in retrying(
            self.options.max_attempts, operation="get", key=key, transient=_body_broke, wait_initial=0.05, wait_max=2.0
        ):
            with attempt:
                response = self._call(key, self._client.get_object, Bucket=self.bucket, Key=s3key)
                body = response["Body"]  # its own read (not its context manager's raw stream) checks the length
                try:
                    return bytes(body.read())
                except STREAM_ERRORS as exc:
                    tries = attempt.retry_state.attempt_number
                    raise storage_error(exc, self.url, self.bucket, key, attempts=tries) from exc
                finally:
                    body.close()
        raise AssertionError("unreachable")  # the last try's error is re-raised

    def exists(self, key: str) -> bool:
        s3key = self._key(key)
        try:
            self._client.head_object(Bucket=self.bucket, Key=s3key)
        except bce.ClientError as exc:
            if error_code(exc) in NOT_FOUND:
                return False
            raise self._error(exc, key) from exc
        except bce.BotoCoreError as exc:
            raise self._error(exc, key) from exc
        return True

    def list(self, prefix: str) -> Iterator[str]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._root + prefix, PaginationConfig={"PageSize": self.options.list_page_size}
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self._root) :]
                    if key and not key.endswith("/"):  # "folder" markers some tools create are not objects
                        yield key
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, prefix or "(all keys)") from exc

    def delete(self, key: str) -> None:
        self._key(key)
        failed = self.delete_many([key])
        if key in failed:
            raise failed[key]

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------ beyond the protocol

    def delete_many(self, keys: Iterable[str]) -> dict[str, StorageError]:
        """Remove many keys, 1000 per request; absent keys are not an error.

        Returns the keys that could not be removed, each with its error
        (ObjectLockedError for a version under retention). A failure of the
        whole request (credentials, bucket) raises.
        """
        wanted = [self._key(k) for k in keys]
        if self._is_versioned():
            objects = self._versions(wanted)
        else:
            objects = [{"Key": s3key} for s3key in wanted]
        failed: dict[str, StorageError] = {}
        for start in range(0, len(objects), self.delete_batch):
            batch = objects[start : start + self.delete_batch]
            first = batch[0]["Key"][len(self._root) :]
            response = self._call(
                first, self._client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            for err in response.get("Errors", ()):
                key = str(err["Key"])[len(self._root) :]
                if key not in failed:
                    tried = [o["VersionId"] for o in objects if o["Key"] == err["Key"] and "VersionId" in o]
                    failed[key] = self._delete_failure(key, err, [err["VersionId"]] if "VersionId" in err else tried)
        return failed

    # ------------------------------------------------------------ helpers

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key or not key.isascii() or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"storage {self.url}: invalid object key {key!r}")
        return self._root + key

    def _put_args(self, key: str) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        opts = self.options
        if opts.object_lock_mode and opts.object_lock_days and not key.startswith(opts.object_lock_skip_prefixes):
            extra["ObjectLockMode"] = opts.object_lock_mode.upper()
            extra["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=opts.object_lock_days)
        if opts.sse:
            extra["ServerSideEncryption"] = opts.sse
            if opts.sse_kms_key_id:
                extra["SSEKMSKeyId"] = opts.sse_kms_key_id
        return extra

    def _call(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, key) from exc

    def _error(self, exc: Exception, key: str) -> StorageError:
        attempts = self.options.max_attempts
        if isinstance(exc, bce.ClientError):
            attempts = int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
        return storage_error(exc, self.url, self.bucket, key, attempts=attempts)

    def _is_versioned(self) -> bool:
        """Whether the bucket keeps versions (always so with Object Lock); asked once."""
        with self._versioned_lock:
            if self._versioned is None:
                try:
                    status = self._client.get_bucket_versioning(Bucket=self.bucket).get("Status")
                    self._versioned = status in ("Enabled", "Suspended")
                except bce.ClientError as exc:
                    if error_code(exc) not in DENIED:
                        raise self._error(exc, "(bucket versioning)") from exc
                    # not allowed to ask: trust the options (Object Lock needs versioning)
                    self._versioned = self.options.object_lock_mode is not None
                    log.warning("s3.versioning_unknown", url=self.url, assumed=self._versioned)
                except bce.BotoCoreError as exc:
                    raise self._error(exc, "(bucket versioning)") from exc
            return self._versioned

    def _versions(self, s3keys: builtins.list[str]) -> builtins.list[dict[str, str]]:
        """Every version and delete marker of exactly these keys.

        One key is listed by its own name; many are listed folder by folder
        (``chunks/ab/``), one listing for all the keys of a folder.
        """
        wanted = set(s3keys)
        folders = {k.rpartition("/")[0] + "/" if "/" in k else "" for k in wanted}
        prefixes = sorted(wanted) if len(wanted) == 1 else sorted(folders)
        found: dict[tuple[str, str], dict[str, str]] = {}  # a key may be below two of the prefixes
        paginator = self._client.get_paginator("list_object_versions")
        for prefix in prefixes:
            try:
                for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                    for item in [*page.get("Versions", ()), *page.get("DeleteMarkers", ())]:
                        if item["Key"] in wanted:
                            key, version = str(item["Key"]), str(item["VersionId"])
                            found[key, version] = {"Key": key, "VersionId": version}
            except (bce.ClientError, bce.BotoCoreError) as exc:
                raise self._error(exc, prefix[len(self._root) :] or "(all keys)") from exc
        return list(found.values())

    def _delete_failure(self, key: str, err: Mapping[str, Any], versions: builtins.list[str]) -> StorageError:
        code = str(err.get("Code", ""))
        if code in DENIED:
            for version in versions:
                until = self._retained_until(self._root + key, version)
                if until is not None:
                    return ObjectLockedError(f"storage {self.url}: object {key} is under retention until {until}")
        if code in DENIED:
            return StoragePermissionError(f"storage {self.url}: permission denied on {key} ({code})")
        return StorageError(f"storage {self.url}: {code}: {err.get('Message', '')} (deleting {key})")

    def _retained_until(self, s3key: str, version: str) -> str | None:
        """When the retention (or legal hold) of one version ends, or None when it has none."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=s3key, VersionId=version)
        except (bce.ClientError, bce.BotoCoreError):
            return None
        until = head.get("ObjectLockRetainUntilDate")
        if isinstance(until, datetime) and until > datetime.now(UTC):
            return until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return "its legal hold is removed"
        return None
