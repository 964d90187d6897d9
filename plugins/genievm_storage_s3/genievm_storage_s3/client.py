"""A boto3 S3 client set up from the options, and the translation of its errors into GenieVM's.

Retries are botocore's (``standard`` or ``adaptive`` mode: throttling, 5xx,
timeouts and dropped connections, with exponential backoff and jitter); the
connection pool holds as many connections as the engine runs workers. An
error message names the repository URL, the key and the S3 error code, never
a credential.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import boto3
import botocore.exceptions as bce
import botocore.session
from botocore.config import Config
from urllib3.exceptions import InsecureRequestWarning

from genievm_core.errors import (
    ConfigError,
    ObjectNotFoundError,
    StorageError,
    StorageFullError,
    StoragePermissionError,
)
from genievm_core.logging import get_logger
from genievm_storage_s3.options import S3Options

__all__ = ["error_code", "make_client", "storage_error"]

log = get_logger("genievm.storage.s3")

NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
DENIED = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"})
BAD_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired"}
)
FULL = frozenset({"QuotaExceeded", "XMinioStorageFull", "InsufficientStorage", "StorageFull"})
THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"})


_loader: Any = None
_loader_lock = threading.Lock()


def _botocore_session() -> botocore.session.Session:
    """A new botocore session sharing one loader of service models: a second client costs 40 ms, not 250."""
    global _loader
    session = botocore.session.get_session()
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    return session


def make_client(options: S3Options) -> Any:
    """The S3 client: credentials from the options or the standard AWS chain, TLS verified unless told not."""
    try:
        if options.access_key_id is not None and options.secret_access_key is not None:
            session = boto3.session.Session(
                aws_access_key_id=options.access_key_id.get_secret_value(),
                aws_secret_access_key=options.secret_access_key.get_secret_value(),
                aws_session_token=options.session_token.get_secret_value() if options.session_token else None,
                botocore_session=_botocore_session(),
            )
        else:
            session = boto3.session.Session(profile_name=options.profile, botocore_session=_botocore_session())
        config = Config(
            region_name=options.region,
            retries={"mode": options.retry_mode, "total_max_attempts": options.max_attempts},
            max_pool_connections=options.max_pool_connections,
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            s3={"addressing_style": options.addressing_style},
            request_checksum_calculation=options.request_checksums,
            response_checksum_validation=options.request_checksums,
        )
        verify: bool | str = options.ca_bundle if options.ca_bundle and options.verify_tls else options.verify_tls
        if not options.verify_tls:  # asked for: one log event, not a urllib3 warning on every request
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            log.warning("s3.tls_not_verified", endpoint=options.endpoint_url)
        return session.client("s3", endpoint_url=options.endpoint_url, config=config, verify=verify)
    except bce.ProfileNotFound:
        raise ConfigError(
            f"invalid configuration: S3 storage options: profile: no AWS profile {options.profile!r}"
        ) from None
    except (bce.BotoCoreError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: S3 storage options: {type(exc).__name__}: {exc}") from None


def error_code(exc: bce.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def storage_error(exc: Exception, url: str, bucket: str, key: str, *, attempts: int) -> StorageError:
    """The GenieVM error for a failed S3 call on ``key``: one line, no secrets."""
    if isinstance(exc, bce.ClientError):
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")) or code
        if code in NOT_FOUND:
            return ObjectNotFoundError(f"storage {url}: object {key} not found")
        if code == "NoSuchBucket":
            return StorageError(f"storage {url}: bucket {bucket} does not exist (create it, or check the name)")
        if code in BAD_CREDENTIALS:
            return StoragePermissionError(f"storage {url}: permission denied: the S3 credentials were refused ({code})")
        if code in DENIED:
            return StoragePermissionError(f"storage {url}: permission denied on {key} ({code})")
        if code in FULL:
            return StorageFullError(f"storage {url}: no space left while writing {key} ({code})")
        if code == "InvalidRequest" and "lock" in message.lower():
            return StorageError(
                f"storage {url}: bucket {bucket} has no Object Lock ({message}); create the bucket with "
                "Object Lock enabled, or drop the storage options object_lock_mode and object_lock_days"
            )
        if code in THROTTLED:
            return StorageError(f"storage {url}: S3 is throttling requests ({code}), still after {attempts} tries")
        return StorageError(f"storage {url}: {code}: {message} ({key})")
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return StoragePermissionError(
            f"storage {url}: permission denied: no S3 credentials found (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the storage options access_key_id and secret_access_key)"
        )
    if isinstance(exc, bce.SSLError):
        return StorageError(
            f"storage {url}: TLS certificate verification failed for the S3 endpoint "
            "(give the storage option ca_bundle, or verify_tls=false to skip the check)"
        )
    if isinstance(exc, bce.EndpointConnectionError):
        return StorageError(f"storage {url}: cannot connect to the S3 endpoint {exc.kwargs.get('endpoint_url', '')}")
    if isinstance(exc, bce.BotoCoreError):
        return StorageError(f"storage {url}: {exc} (after {attempts} tries; {key})")
    return StorageError(f"storage {url}: {type(exc).__name__}: {exc} ({key})")
