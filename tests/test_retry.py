"""Transient storage errors are retried with backoff (tenacity); permanent ones fail at once."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import backup_vm, random_bytes, write_image

from genievm_core.errors import StorageError, StorageFullError, WrongPassphraseError
from genievm_core.jobs import run_verify
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import StorageTarget
from genievm_core.repository import Repository
from genievm_core.repository.retry import RetryingStorage, is_transient, with_retries
from genievm_core.repository.storage import open_storage


class FlakyStorageDouble:
    """A real filesystem target that fails every ``every``-th call with the error ``make`` builds.

    A test double for a storage whose network or disk hiccups now and then.
    """

    def __init__(self, inner: StorageTarget, make: Any, every: int = 3) -> None:
        self.inner = inner
        self.url = inner.url
        self.make = make
        self.every = every
        self.calls = 0
        self.failures = 0

    def _maybe_fail(self, key: str) -> None:
        self.calls += 1
        if self.every and self.calls % self.every == 0:
            self.failures += 1
            raise self.make(key)

    def put(self, key: str, data: bytes | bytearray) -> None:
        self._maybe_fail(key)
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self._maybe_fail(key)
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        self._maybe_fail(key)
        return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[str]:
        self._maybe_fail(prefix)
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._maybe_fail(key)
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()


def wrapped(message: str, cause: BaseException) -> StorageError:
    """A StorageError as a plugin raises it: ``raise StorageError(...) from cause``."""
    err = StorageError(message)
    err.__cause__ = cause
    return err


def io_error(key: str) -> StorageError:
    return wrapped(f"storage x: Input/output error ({key})", OSError(errno.EIO, "Input/output error"))


def not_a_directory(key: str) -> StorageError:
    return wrapped(f"storage x: Not a directory ({key})", NotADirectoryError(errno.ENOTDIR, "Not a directory"))


def test_what_is_transient() -> None:
    assert is_transient(io_error("k"))
    assert not is_transient(not_a_directory("k"))
    assert not is_transient(StorageError("storage x: invalid object key"))  # the plugin's own verdict
    assert not is_transient(StorageFullError("storage x: no space left"))
    assert not is_transient(WrongPassphraseError("wrong passphrase"))
    assert is_transient(wrapped("storage s3://b: connection reset", ConnectionResetError()))  # no errno


def test_a_backup_through_a_flaky_storage_succeeds_and_verifies(host: PluginHost, tmp_path: Path) -> None:
    flaky = FlakyStorageDouble(open_storage(host, str(tmp_path / "repo")), io_error, every=4)
    storage = RetryingStorage(flaky, attempts=3, wait_initial=0, wait_max=0)
    repo = Repository.init(storage, passphrase=None, chunk_size=65536)
    image = write_image(tmp_path / "vda.img", 20 * 65536, [(0, random_bytes(20 * 65536, 4))])
    manifest = backup_vm(host, repo, "web01", {"vda": image})
    assert flaky.failures >= 10  # every fourth call failed, and each was retried
    assert manifest.stats.chunks_new == 20
    flaky.every = 0
    assert all(r.ok for r in run_verify(host, repo, [manifest], read_data=True))


def test_retries_stop_at_the_limit(host: PluginHost, tmp_path: Path) -> None:
    flaky = FlakyStorageDouble(open_storage(host, str(tmp_path / "repo")), io_error, every=1)
    storage = RetryingStorage(flaky, attempts=4, wait_initial=0, wait_max=0)
    with pytest.raises(StorageError, match="Input/output error"):
        storage.put("config", b"{}")
    assert flaky.calls == 4


@pytest.mark.parametrize("make", [not_a_directory, lambda key: StorageFullError(f"storage x: full ({key})")])
def test_permanent_errors_are_not_retried(host: PluginHost, tmp_path: Path, make: Any) -> None:
    flaky = FlakyStorageDouble(open_storage(host, str(tmp_path / "repo")), make, every=1)
    storage = RetryingStorage(flaky, attempts=5, wait_initial=0, wait_max=0)
    with pytest.raises(StorageError):
        storage.get("config")
    assert flaky.calls == 1


def test_a_target_that_retries_itself_is_not_wrapped(tmp_path: Path) -> None:
    """S3 retries through botocore: a second layer would retry what botocore judged permanent."""
    class RetriesItselfDouble:
        retries_itself = True
        url = "double://"

    itself = RetriesItselfDouble()
    assert with_retries(itself) is itself  # type: ignore[arg-type]
    plain = with_retries(open_storage(PluginHost(), str(tmp_path)))
    assert isinstance(plain, RetryingStorage)
