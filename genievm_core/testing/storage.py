"""The storage contract: tests every ``StorageTarget`` must pass, run by each storage plugin.

A plugin's test module subclasses ``StorageContract`` and overrides the
``storage`` fixture to return a fresh, empty target (and close it after)::

    from genievm_core.testing import StorageContract

    class TestMyStorage(StorageContract):
        @pytest.fixture
        def storage(self, tmp_path):
            target = MyStorage(tmp_path / "repo")
            yield target
            target.close()

pytest then runs every ``test_*`` method below against it. The class
attributes size the heavier tests; a subclass may change them (for instance
to make the large object cross its multipart threshold).

What the core relies on, and these tests check: a put is atomic (a reader sees
the old object, the new one, or none; never a part), a later put of a key
replaces it whole, concurrent puts of one key leave one of the values whole,
``list`` is by plain string prefix (not by folder) and returns every key however
many pages the store needs, a get of an absent key raises ObjectNotFoundError,
a delete of an absent key is not an error, and keys that are not plain
``/``-separated paths are refused.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest

from genievm_core.errors import ObjectNotFoundError, StorageError
from genievm_core.plugin.protocols import StorageTarget

__all__ = ["StorageContract"]

INVALID_KEYS = ["", "/abs", "a//b", "../x", "a/../../x", "a/./b", "a/"]
REPOSITORY_KEYS = [
    "config",
    "chunks/ab/ab01",
    "chunks/ab/ab02",
    "chunks/cd/cd01",
    "manifests/m1",
    "manifests/m2",
    "indexes/m1/vda",
    "indexes/m1/vdb",
    "indexes/m10/vda",
]


class StorageContract:
    """Subclass as ``Test...`` and override the ``storage`` fixture: a fresh, empty target."""

    #: bytes of the large object (20 MiB: crosses a multipart threshold set low by the fixture)
    large_object_size: ClassVar[int] = 20 << 20
    #: keys of the listing test: more than one page of a paginated listing (S3 pages hold 1000)
    many_keys: ClassVar[int] = 1100
    #: bytes of each version in the overwrite test
    version_size: ClassVar[int] = 256 << 10
    #: threads that put or read at once
    threads: ClassVar[int] = 6

    @pytest.fixture
    def storage(self) -> StorageTarget:
        pytest.fail(f"{type(self).__name__} must override the `storage` fixture with a fresh, empty target")

    # ------------------------------------------------------------ put, get, exists

    def test_put_get_exists(self, storage: StorageTarget) -> None:
        assert not storage.exists("config")
        storage.put("config", b"{}")
        storage.put("chunks/ab/abcdef", b"\x00\x01" * 1000)
        assert storage.get("config") == b"{}"
        data = storage.get("chunks/ab/abcdef")
        assert isinstance(data, bytes) and data == b"\x00\x01" * 1000
        assert storage.exists("config") and storage.exists("chunks/ab/abcdef")
        assert not storage.exists("chunks/ab"), "a folder (a prefix of keys) is not an object"
        assert not storage.exists("chunks")

    def test_get_of_an_absent_key_is_object_not_found(self, storage: StorageTarget) -> None:
        with pytest.raises(ObjectNotFoundError, match="manifests/absent"):
            storage.get("manifests/absent")
        storage.put("manifests/present", b"x")
        with pytest.raises(ObjectNotFoundError):
            storage.get("manifests/presen")

    def test_put_replaces_the_whole_object(self, storage: StorageTarget) -> None:
        storage.put("k", b"first version, the longer one")
        storage.put("k", b"second")
        assert storage.get("k") == b"second"
        assert list(storage.list("k")) == ["k"]

    def test_empty_object(self, storage: StorageTarget) -> None:
        storage.put("empty", b"")
        assert storage.exists("empty")
        assert storage.get("empty") == b""
        assert list(storage.list("")) == ["empty"]

    def test_bytes_are_kept_exactly(self, storage: StorageTarget) -> None:
        data = bytearray(range(256)) * 17
        storage.put("chunks/00/every-byte", data)
        data[0] = 255  # the store must have taken a copy, or sent it already
        assert storage.get("chunks/00/every-byte") == bytes(range(256)) * 17

    def test_keys_of_a_repository(self, storage: StorageTarget) -> None:
        keys = ["manifests/20261128T082710.512204Z-959611fd", "indexes/20261128T082710.512204Z-959611fd/vda-1_x@y+z"]
        for key in keys:
            storage.put(key, key.encode())
        for key in keys:
            assert storage.get(key) == key.encode()
        assert sorted(storage.list("")) == sorted(keys)

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_keys_that_are_not_plain_paths_are_refused(self, storage: StorageTarget, key: str) -> None:
        calls: list[Callable[[], object]] = [
            lambda: storage.put(key, b"x"),
            lambda: storage.get(key),
            lambda: storage.exists(key),
            lambda: storage.delete(key),
        ]
        for call in calls:
            with pytest.raises(StorageError, match="invalid object key") as info:
                call()
            assert not isinstance(info.value, ObjectNotFoundError)
        assert list(storage.list("")) == []

    # ------------------------------------------------------------ large objects and atomicity

    def test_a_large_object_appears_whole(self, storage: StorageTarget) -> None:
        """Readers polling a key while a large object is put see it absent, or whole; never a part."""
        payload = os.urandom(self.large_object_size)
        stop = threading.Event()
        wrong: list[int] = []

        def reader() -> None:
            while not stop.is_set():
                try:
                    data = storage.get("chunks/bi/big")
                except ObjectNotFoundError:
                    time.sleep(0.002)
                    continue
                if data != payload:
                    wrong.append(len(data))

        with ThreadPoolExecutor(2) as pool:
            readers = [pool.submit(reader) for _ in range(2)]
            try:
                storage.put("chunks/bi/big", payload)
                assert storage.get("chunks/bi/big") == payload
            finally:
                stop.set()
            for r in readers:
                r.result()
        assert wrong == [], f"readers saw partial objects of {wrong} bytes"
        assert list(storage.list("chunks/")) == ["chunks/bi/big"]
        storage.delete("chunks/bi/big")
        assert not storage.exists("chunks/bi/big")

    def test_readers_see_whole_objects_during_overwrites(self, storage: StorageTarget) -> None:
        versions = [bytes([v]) * self.version_size for v in range(1, 6)]
        storage.put("big", versions[0])
        stop = threading.Event()
        seen: set[bytes] = set()
        torn: list[int] = []
        reads = [0, 0]

        def reader(n: int) -> None:
            while not stop.is_set():
                data = storage.get("big")
                if data not in versions:
                    torn.append(len(data))
                seen.add(data[:1])
                reads[n] += 1

        with ThreadPoolExecutor(2) as pool:
            readers = [pool.submit(reader, n) for n in range(2)]
            deadline = time.monotonic() + 30
            rounds = 0
            try:  # at least 4 rounds, and on until both readers have read many times and seen two versions
                # (a busy machine may schedule them late, and a fast in-memory store may hold the GIL through
                # every put of a round: each put hands it over, so that a reader can run between two puts)
                while rounds < 4 or ((min(reads) < 20 or len(seen) < 2) and time.monotonic() < deadline):
                    for version in versions:
                        storage.put("big", version)
                        time.sleep(0)
                    rounds += 1
            finally:
                stop.set()
            for r in readers:
                r.result()
        assert torn == [], "a reader saw a partly written object"
        assert len(seen) > 1, "the readers should have seen several versions"
        assert storage.get("big") == versions[-1]

    def test_concurrent_puts_of_one_key_leave_one_value_whole(self, storage: StorageTarget) -> None:
        payloads = [os.urandom(256 << 10) for _ in range(self.threads)]
        with ThreadPoolExecutor(self.threads) as pool:
            for done in [pool.submit(storage.put, "chunks/aa/same", p) for p in payloads]:
                done.result()
        assert storage.get("chunks/aa/same") in payloads
        assert list(storage.list("chunks/")) == ["chunks/aa/same"]

    # ------------------------------------------------------------ list

    def test_list_by_prefix(self, storage: StorageTarget) -> None:
        for key in REPOSITORY_KEYS:
            storage.put(key, key.encode())
        assert sorted(storage.list("")) == sorted(REPOSITORY_KEYS)
        assert sorted(storage.list("chunks/")) == ["chunks/ab/ab01", "chunks/ab/ab02", "chunks/cd/cd01"]
        assert sorted(storage.list("chunks/ab/")) == ["chunks/ab/ab01", "chunks/ab/ab02"]
        assert sorted(storage.list("chunks/ab/ab0")) == ["chunks/ab/ab01", "chunks/ab/ab02"]
        assert sorted(storage.list("manifests/m")) == ["manifests/m1", "manifests/m2"]
        assert sorted(storage.list("indexes/m1/")) == ["indexes/m1/vda", "indexes/m1/vdb"]
        assert sorted(storage.list("indexes/m1")) == ["indexes/m1/vda", "indexes/m1/vdb", "indexes/m10/vda"]
        assert sorted(storage.list("conf")) == ["config"]
        assert list(storage.list("config/")) == []
        assert list(storage.list("locks/")) == []
        assert list(storage.list("nothing/here/")) == []

    def test_list_of_an_empty_store_is_empty(self, storage: StorageTarget) -> None:
        assert list(storage.list("")) == []
        assert list(storage.list("chunks/")) == []

    def test_list_returns_every_key_of_many_pages(self, storage: StorageTarget) -> None:
        keys = [f"chunks/{i % 7:02x}/{i:06d}" for i in range(self.many_keys)]
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(lambda k: storage.put(k, b"."), keys))
        storage.put("config", b"{}")
        listed = list(storage.list("chunks/"))
        assert len(listed) == len(keys), "each key once"
        assert sorted(listed) == sorted(keys)
        assert sorted(storage.list("chunks/03/")) == sorted(k for k in keys if k.startswith("chunks/03/"))
        assert len(list(storage.list(""))) == len(keys) + 1

    # ------------------------------------------------------------ delete

    def test_delete(self, storage: StorageTarget) -> None:
        storage.put("manifests/m1", b"1")
        storage.put("manifests/m10", b"10")
        storage.delete("manifests/m1")
        assert not storage.exists("manifests/m1")
        with pytest.raises(ObjectNotFoundError):
            storage.get("manifests/m1")
        assert list(storage.list("manifests/")) == ["manifests/m10"], "a delete leaves keys it is a prefix of"
        assert storage.get("manifests/m10") == b"10"

    def test_delete_of_an_absent_key_is_not_an_error(self, storage: StorageTarget) -> None:
        storage.delete("config")
        storage.delete("never/was/here")
        storage.put("config", b"{}")
        storage.delete("config")
        storage.delete("config")
        assert list(storage.list("")) == []

    def test_put_after_delete(self, storage: StorageTarget) -> None:
        storage.put("chunks/ab/ab01", b"one")
        storage.delete("chunks/ab/ab01")
        storage.put("chunks/ab/ab01", b"two")
        assert storage.get("chunks/ab/ab01") == b"two"
