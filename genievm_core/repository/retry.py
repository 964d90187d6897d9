"""Retries with backoff for transient storage errors (tenacity).

A transient storage error (an I/O error, a dropped connection, a timeout: see
``is_transient``) is retried with exponential backoff and jitter, up to
``attempts`` tries in all. Errors that retrying cannot fix fail at once: a full
store, a permission, a missing object, an object under retention, and every
error that is not a storage error (a wrong passphrase, an unknown VM, a bad
config, corruption).

Every storage operation may be retried: puts are atomic and idempotent, as are
deletes, and a listing is retried as a whole.

A target that retries by itself (``retries_itself = True``: the S3 plugin,
through botocore) is used as it is; a second layer would multiply the tries
and retry what its own layer already judged permanent. Such a target retries
what its own layer does not (the S3 plugin: a body whose connection broke
while it came in) with ``retrying``, the policy ``RetryingStorage`` uses.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from genievm_core.errors import StorageError
from genievm_core.logging import get_logger
from genievm_core.plugin.protocols import StorageTarget

__all__ = ["DEFAULT_ATTEMPTS", "RetryingStorage", "is_transient", "retrying", "with_retries"]

DEFAULT_ATTEMPTS = 5
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EAGAIN,
        errno.EINTR,
        errno.EBUSY,
        errno.ETIMEDOUT,
        errno.ESTALE,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.EPIPE,
    }
)
T = TypeVar("T")
log = get_logger("genievm.storage")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may help.

    Only a StorageError of the base class (not full, permission, not found,
    locked) qualifies, and then by its cause: an OSError with an errno that
    may pass (EIO, EAGAIN, ETIMEDOUT, a reset connection, ...) or none
    (``TimeoutError()``); any other exception an SDK raised (a connection
    or HTTP error wrapped by the plugin). An OSError with another errno
    (ENOTDIR, EINVAL, ...) and a StorageError without a cause (the plugin's
    own verdict, e.g. an invalid key) are permanent.
    """
    if type(exc) is not StorageError:
        return False
    cause = exc.__cause__
    if cause is None:
        return False
    if isinstance(cause, OSError) and cause.errno is not None:
        return cause.errno in TRANSIENT_ERRNOS
    return True


def retrying(
    attempts: int,
    *,
    operation: str,
    key: str,
    transient: Callable[[BaseException], bool] = is_transient,
    wait_initial: float = 0.5,
    wait_max: float = 30,
) -> Retrying:
    """The retry policy of storage operations: up to ``attempts`` tries in all, while the error is
    ``transient``, with exponential backoff and full jitter (``wait_initial`` seconds, doubling, at most
    ``wait_max``); each retry logged as ``storage.retry``; the last error re-raised as it is.

    Call it with the operation (``retrying(...)(fn)``) or iterate it (``for attempt in retrying(...):
    with attempt: ...``; ``attempt.retry_state.attempt_number`` counts the tries).
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("storage.retry", operation=operation, key=key, attempt=state.attempt_number, error=str(exc))

    return Retrying(
        retry=retry_if_exception(transient),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=wait_initial, max=wait_max),
        before_sleep=before_sleep,
        reraise=True,
    )


def with_retries(storage: StorageTarget, attempts: int = DEFAULT_ATTEMPTS) -> StorageTarget:
    """``storage`` with retries on transient errors, unless it retries by itself."""
    if getattr(storage, "retries_itself", False):
        return storage
    return RetryingStorage(storage, attempts=attempts)


class RetryingStorage:
    """A storage target whose operations are retried on transient errors."""

    def __init__(
        self,
        storage: StorageTarget,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        wait_initial: float = 0.5,
        wait_max: float = 30,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = storage
        self.url = storage.url
        self.attempts = attempts
        self.wait_initial, self.wait_max = wait_initial, wait_max

    def _call(self, operation: str, key: str, fn: Callable[[], T]) -> T:
        policy = retrying(
            self.attempts, operation=operation, key=key, wait_initial=self.wait_initial, wait_max=self.wait_max
        )
        return policy(fn)

    def put(self, key: str, data: bytes | bytearray) -> None:
        self._call("put", key, lambda: self.inner.put(key, data))

    def get(self, key: str) -> bytes:
        return self._call("get", key, lambda: self.inner.get(key))

    def exists(self, key: str) -> bool:
        return self._call("exists", key, lambda: self.inner.exists(key))

    def list(self, prefix: str) -> Iterator[str]:
        return iter(self._call("list", prefix, lambda: list(self.inner.list(prefix))))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        """The target's optional methods (``delete_many``, ``remove_leftovers``), passed through without retries."""
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
