"""EC2 and EBS direct calls: one boto3 session, the core's retry policy, AWS errors as GenieVM errors.

botocore's own retries are off (one attempt per call); each call is retried by
``genievm_core.repository.retry.retrying``, the policy storage operations use
(exponential backoff with jitter, ``maxAttempts`` tries), while its error is
throttling (``RequestThrottledException``, ``RequestLimitExceeded``, ...), a 5xx
answer, a dropped connection or a block that failed its checksum. What is left
becomes one line: an unknown instance ``VMNotFoundError``, refused credentials
``AuthenticationError``, a missing permission a ``ProviderError`` naming the
IAM action, a region botocore does not know a ``ConfigError``.

Credentials come from boto3's chain only; error messages carry AWS's code and
message, never a request's headers or keys.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.exceptions as bce
import botocore.session
from botocore.config import Config

from genievm_aws.options import AWSOptions
from genievm_core.errors import AuthenticationError, ConfigError, GenieVMError, ProviderError, VMNotFoundError
from genievm_core.repository.retry import retrying

__all__ = ["AWS", "BlockChecksumError", "error_code", "is_transient"]

T = TypeVar("T")
THROTTLED = frozenset(
    {
        "RequestThrottledException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "ConcurrentLimitExceededException",
    }
)
UNAVAILABLE = frozenset(
    {"InternalServerException", "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"}
)
BAD_CREDENTIALS = frozenset(
    {
        "AuthFailure",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "IncompleteSignature",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})
UNKNOWN_INSTANCE = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})


class BlockChecksumError(Exception):
    """A block's data does not match the checksum EBS sent with it (retried like a dropped connection)."""


def error_code(exc: BaseException) -> str:
    if isinstance(exc, bce.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_transient(exc: BaseException) -> bool:
    """Whether trying the call again may help: throttling, a 5xx, a broken connection, a bad checksum."""
    if isinstance(exc, BlockChecksumError):
        return True
    if isinstance(exc, bce.ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return error_code(exc) in THROTTLED | UNAVAILABLE or status >= 500
    return isinstance(
        exc, bce.ConnectionError | bce.HTTPClientError | bce.ResponseStreamingError | bce.IncompleteReadError
    )


def _action(service: str, operation: str) -> str:
    return f"{service}:" + "".join(part.title() for part in operation.split("_"))


@functools.cache
def _service_models() -> Any:
    """One loader of botocore's service models for the process: a second provider's EC2 client costs ms, not 0.5 s."""
    return botocore.session.get_session().get_component("data_loader")


def _session(profile: str | None, region: str | None) -> boto3.session.Session:
    core = botocore.session.get_session()
    core.register_component("data_loader", _service_models())
    return boto3.session.Session(profile_name=profile, region_name=region, botocore_session=core)


def known_region(region: str) -> bool:
    session = _session(None, None)
    return any(
        region in session.get_available_regions("ec2", partition) for partition in session.get_available_partitions()
    )


class AWS:
    """The EC2 and EBS clients of one region; ``ec2(...)`` and ``ebs(...)`` make one retried call each."""

    def __init__(self, options: AWSOptions, *, pool: int = 10) -> None:
        self.options = options
        try:
            session = _session(options.profile, options.region)
        except bce.ProfileNotFound:
            raise ConfigError(f"invalid providerOptions: profile: no AWS profile {options.profile!r}") from None
        region = session.region_name
        if not region:
            raise ConfigError(
                "invalid providerOptions: region: none given and boto3 has none (-o region=..., or AWS_REGION)"
            )
        if not known_region(region):
            raise ConfigError(
                f"invalid providerOptions: region: {region!r} is not an AWS region "
                "(`aws ec2 describe-regions` lists them)"
            )
        self.region = region
        config = Config(
            region_name=region,
            retries={"mode": "standard", "total_max_attempts": 1},  # the core's policy retries, not botocore
            max_pool_connections=pool,
            connect_timeout=20,
            read_timeout=60,
        )
        try:
            self.ec2_client = session.client("ec2", endpoint_url=options.endpoint_url, config=config)
            self.ebs_client = session.client("ebs", endpoint_url=options.endpoint_url, config=config)
        except ValueError as exc:  # botocore's word for a URL it cannot use
            raise ConfigError(f"invalid providerOptions: endpointUrl: {exc}") from None

    def ec2(self, operation: str, what: str, **params: Any) -> dict[str, Any]:
        """``EC2.<operation>(**params)``, retried; ``what`` names the object in logs and errors."""
        return self.retried("ec2", operation, what, lambda: getattr(self.ec2_client, operation)(**params))

    def ebs(self, operation: str, what: str, **params: Any) -> dict[str, Any]:
        return self.retried("ebs", operation, what, lambda: getattr(self.ebs_client, operation)(**params))

    def retried(self, service: str, operation: str, what: str, call: Callable[[], T]) -> T:
        """``call()`` under the retry policy; a failure left after it as a GenieVM error."""
        policy = retrying(
            self.options.max_attempts, operation=_action(service, operation), key=what, transient=is_transient
        )
        try:
            return policy(call)
        except GenieVMError:
            raise
        except (bce.BotoCoreError, bce.ClientError, BlockChecksumError) as exc:
            raise self.error(exc, service, operation, what) from exc

    def error(self, exc: Exception, service: str, operation: str, what: str) -> GenieVMError:
        """The one line for a failed call on ``what``."""
        action = _action(service, operation)
        tries = self.options.max_attempts
        if isinstance(exc, bce.ClientError):
            code = error_code(exc)
            message = str(exc.response.get("Error", {}).get("Message", "")) or code
            if code in UNKNOWN_INSTANCE:
                return VMNotFoundError(f"no VM {what} on provider aws (region {self.region})")
            if code in BAD_CREDENTIALS:
                return AuthenticationError(
                    f"authentication failed for AWS in region {self.region}: the credentials were refused ({code})"
                )
            if code in DENIED:
                return ProviderError(
                    f"provider aws: permission denied: {action} on {what} (grant it to this role or user)"
                )
            if code in THROTTLED:
                return ProviderError(
                    f"provider aws: {action} on {what}: AWS is throttling requests ({code}), still after {tries} tries"
                )
            return ProviderError(f"provider aws: {action} on {what}: {code}: {message}")
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            return AuthenticationError(
                "authentication failed for AWS: no credentials found (boto3's chain: AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or -o profile=..., SSO, an instance role)"
            )
        if isinstance(exc, bce.EndpointConnectionError):
            return ProviderError(
                f"provider aws: cannot reach {exc.kwargs.get('endpoint_url', 'AWS')} ({action}, after {tries} tries)"
            )
        if isinstance(exc, BlockChecksumError):
            return ProviderError(f"provider aws: {action} on {what}: {exc}, still after {tries} tries")
        return ProviderError(f"provider aws: {action} on {what}: {type(exc).__name__}: {exc}")
