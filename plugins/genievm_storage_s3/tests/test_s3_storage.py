"""The S3 storage target against a real S3 server (moto's, over HTTP): the storage contract,
URLs and options, multipart uploads, batched deletes, Object Lock, encryption, and retries."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import structlog.testing
from faulty_network import FaultyNetwork, unused_port
from genievm_storage_s3 import S3Storage, open_s3_storage, parse_options, parse_url
from s3_testbed import KEYS, REGION

from genievm_core.engine import default_workers
from genievm_core.errors import (
    ConfigError,
    ObjectLockedError,
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
)
from genievm_core.plugin import PluginHost
from genievm_core.repository.storage import open_storage
from genievm_core.testing import StorageContract

MIB = 1 << 20
SMALL_PARTS = {"multipart_threshold": 8 * MIB, "multipart_chunksize": 5 * MIB}


class TestS3StorageContract(StorageContract):
    """The contract under a prefix; the 20 MiB object goes up in 5 MiB parts (threshold set to 8 MiB),
    and the listing of 1001 keys takes two pages of S3's 1000."""

    many_keys = 1001

    @pytest.fixture
    def storage(self, s3_bucket: str, s3_options: dict[str, Any]) -> Iterator[S3Storage]:
        target = open_s3_storage(f"s3://{s3_bucket}/repo", s3_options | SMALL_PARTS)
        yield target
        target.close()


@pytest.fixture
def store(s3_bucket: str, s3_options: dict[str, Any]) -> Iterator[S3Storage]:
    target = open_s3_storage(f"s3://{s3_bucket}/repo", s3_options | SMALL_PARTS)
    yield target
    target.close()


# ---------------------------------------------------------------- URLs and options


def test_urls() -> None:
    assert parse_url("s3://backups/site/a").url == "s3://backups/site/a"
    assert parse_url("s3://backups/site/a/").prefix == "site/a"
    assert parse_url("s3://backups").prefix == "" and parse_url("s3://backups/").url == "s3://backups"
    for bad in ["s3://", "s3://Upper/x", "s3://a/x", "s3://b..c/x", "s3://bucket/a//b", "s3://bucket/../x"]:
        with pytest.raises(ConfigError, match="repository URL"):
            parse_url(bad)
    with pytest.raises(ConfigError, match="not in the URL"):
        parse_url("s3://key:secret@bucket/x")
    with pytest.raises(ConfigError, match="not in the URL"):
        parse_url("s3://bucket/x?endpoint=http://e")


def test_options_from_strings_and_camel_case() -> None:
    """``--storage-option`` values arrive as strings; a job config may spell names in camelCase."""
    options = parse_options(
        {"verify_tls": "false", "maxAttempts": "3", "objectLockMode": "governance", "object_lock_days": "7"}
    )
    assert (options.verify_tls, options.max_attempts) == (False, 3)
    assert (options.object_lock_mode, options.object_lock_days) == ("governance", 7)
    assert parse_options({}).max_pool_connections == default_workers() + 4, "one connection per engine worker, and some"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"endpoint": "http://x"}, "endpoint: Extra inputs are not permitted"),
        ({"object_lock_mode": "governance"}, "go together"),
        ({"object_lock_mode": "forever", "object_lock_days": 1}, "object_lock_mode"),
        ({"multipart_chunksize": MIB}, "multipart_chunksize"),
        ({"sse_kms_key_id": "k"}, "sse=aws:kms"),
        ({"access_key_id": "AKIDEXAMPLE"}, "go together"),
        ({"max_attempts": "many"}, "max_attempts"),
    ],
)
def test_bad_options_are_one_line(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match="S3 storage options") as info:
        parse_options(options)
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_secrets_never_show(s3_bucket: str, s3_options: dict[str, Any]) -> None:
    options = s3_options | {"secret_access_key": "do-not-show-me", "session_token": "nor-me"}
    store = open_s3_storage(f"s3://{s3_bucket}/repo", options)
    assert "do-not-show-me" not in repr(store.options) + str(store.options) + repr(store)
    with pytest.raises(ConfigError) as info:
        parse_options({"secret_access_key": "do-not-show-me", "max_attempts": 0, "access_key_id": "AKID"})
    assert "do-not-show-me" not in str(info.value)


def test_registered_as_the_s3_scheme_through_its_entry_point(s3_bucket: str, s3_options: dict[str, Any]) -> None:
    host = PluginHost()
    info = {p.name: p for p in host.plugins()}["s3"]
    assert (info.distribution, info.origin) == ("genievm-storage-s3", "entry-point")
    assert info.registers == {"storage target": ["s3"]}
    store = open_storage(host, f"s3://{s3_bucket}/r", s3_options)
    assert isinstance(store, S3Storage) and store.url == f"s3://{s3_bucket}/r"


def test_prefixes_keep_repositories_apart(s3_bucket: str, s3_options: dict[str, Any], s3_admin: Any) -> None:
    a = open_s3_storage(f"s3://{s3_bucket}/site/a", s3_options)
    a2 = open_s3_storage(f"s3://{s3_bucket}/site/a2", s3_options)
    a.put("config", b"a")
    a2.put("config", b"a2")
    assert list(a.list("")) == ["config"] and a.get("config") == b"a"
    a.delete("config")
    assert a2.get("config") == b"a2"
    keys = [o["Key"] for o in s3_admin.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert keys == ["site/a2/config"]


def test_checksums_only_when_required(s3_bucket: str, s3_options: dict[str, Any], s3_admin: Any) -> None:
    """For stores that refuse botocore's default CRC checksums; S3 still gets whole objects."""
    store = open_s3_storage(f"s3://{s3_bucket}/repo", s3_options | {"request_checksums": "when_required"})
    data = os.urandom(MIB)
    store.put("chunks/ab/ab01", data)
    assert store.get("chunks/ab/ab01") == data
    head = s3_admin.head_object(Bucket=s3_bucket, Key="repo/chunks/ab/ab01", ChecksumMode="ENABLED")
    assert not any(k.startswith("Checksum") for k in head), "no checksum was sent"
    default = open_s3_storage(f"s3://{s3_bucket}/repo", s3_options)
    default.put("chunks/ab/ab03", data)  # the default sends one
    head = s3_admin.head_object(Bucket=s3_bucket, Key="repo/chunks/ab/ab03", ChecksumMode="ENABLED")
    assert any(k.startswith("Checksum") for k in head)


def test_folder_markers_are_not_objects(store: S3Storage, s3_admin: Any) -> None:
    s3_admin.put_object(Bucket=store.bucket, Key="repo/chunks/", Body=b"")
    store.put("chunks/ab/ab01", b"x")
    assert list(store.list("")) == ["chunks/ab/ab01"]


# ---------------------------------------------------------------- multipart


def test_large_objects_go_up_in_parts_and_small_ones_in_one(store: S3Storage, s3_admin: Any) -> None:
    big, small = os.urandom(12 * MIB), os.urandom(MIB)
    store.put("chunks/bi/big", big)
    store.put("chunks/sm/small", small)
    assert s3_admin.head_object(Bucket=store.bucket, Key="repo/chunks/bi/big")["ETag"].endswith('-3"')
    assert "-" not in s3_admin.head_object(Bucket=store.bucket, Key="repo/chunks/sm/small")["ETag"]
    assert store.get("chunks/bi/big") == big and store.get("chunks/sm/small") == small


def test_a_failed_multipart_upload_is_aborted(s3_bucket: str, s3_options: dict[str, Any], s3_admin: Any) -> None:
    with_faults = FaultyNetwork(s3_options["endpoint_url"])
    try:
        store = open_s3_storage(
            f"s3://{s3_bucket}/repo", s3_options | SMALL_PARTS | {"endpoint_url": with_faults.url, "max_attempts": 2}
        )
        with_faults.cut_uploads(100, after=MIB)  # every part, every try
        with pytest.raises(StorageError, match="chunks/bi/big"):
            store.put("chunks/bi/big", os.urandom(12 * MIB))
        assert with_faults.cuts >= 2
        with_faults.cut_uploads(0, after=0)
        assert not store.exists("chunks/bi/big")
        assert s3_admin.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == [], "no upload left open"
    finally:
        with_faults.close()


# ---------------------------------------------------------------- batched delete


@pytest.mark.parametrize("versioned", [False, True], ids=["plain", "versioned"])
def test_delete_many_in_batches(
    make_bucket: Callable[..., str], s3_options: dict[str, Any], s3_admin: Any, versioned: bool
) -> None:
    """120 keys, 50 per DeleteObjects request here (S3 takes up to 1000: too many puts for a quick test)."""
    bucket = make_bucket(versioned=versioned)
    store = open_s3_storage(f"s3://{bucket}/repo", s3_options)
    store.delete_batch = 50
    keys = [f"chunks/{i % 3:02x}/{i:05d}" for i in range(120)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda k: store.put(k, b"."), keys))
    store.put("config", b"{}")
    assert store.delete_many([*keys, "chunks/never/there"]) == {}
    assert list(store.list("")) == ["config"]
    versions = s3_admin.list_object_versions(Bucket=bucket)
    assert [v["Key"] for v in versions.get("Versions", [])] == ["repo/config"]
    assert versions.get("DeleteMarkers", []) == []


def test_delete_in_a_versioned_bucket_leaves_no_version(
    make_bucket: Callable[..., str], s3_options: dict[str, Any], s3_admin: Any
) -> None:
    bucket = make_bucket(versioned=True)
    store = open_s3_storage(f"s3://{bucket}/repo", s3_options | {"list_page_size": 2})
    store.put("manifests/m1", b"one")
    store.put("manifests/m1", b"two")
    store.put("manifests/m10", b"ten")
    store.delete("manifests/m1")
    store.delete("manifests/m1")  # absent now: not an error
    store.delete("manifests/never")
    versions = s3_admin.list_object_versions(Bucket=bucket)
    assert [v["Key"] for v in versions.get("Versions", [])] == ["repo/manifests/m10"]
    assert versions.get("DeleteMarkers", []) == []
    assert list(store.list("manifests/")) == ["manifests/m10"]
    with pytest.raises(ObjectNotFoundError):
        store.get("manifests/m1")


# ---------------------------------------------------------------- Object Lock and encryption


@pytest.fixture
def locked_store(make_bucket: Callable[..., str], s3_options: dict[str, Any]) -> S3Storage:
    options = s3_options | {"object_lock_mode": "governance", "object_lock_days": 2}
    return open_s3_storage(f"s3://{make_bucket(object_lock=True)}/repo", options)


def test_object_lock_retains_chunks_and_manifests(locked_store: S3Storage, s3_admin: Any) -> None:
    before = datetime.now(UTC)
    for key in ("config", "chunks/ab/ab01", "indexes/b1/vda", "manifests/b1"):
        locked_store.put(key, b"kept")
        head = s3_admin.head_object(Bucket=locked_store.bucket, Key=f"repo/{key}")
        assert head["ObjectLockMode"] == "GOVERNANCE"
        until = head["ObjectLockRetainUntilDate"]
        assert before + timedelta(days=2) - timedelta(minutes=1) <= until <= datetime.now(UTC) + timedelta(days=2)
    with pytest.raises(
        ObjectLockedError, match=r"object chunks/ab/ab01 is under retention until 20\d\d-\d\d-\d\dT"
    ) as info:
        locked_store.delete("chunks/ab/ab01")
    assert info.value.exit_code == 25
    assert locked_store.get("chunks/ab/ab01") == b"kept", "a locked object stays readable"
    assert "chunks/ab/ab01" in list(locked_store.list("chunks/"))


def test_lock_objects_are_never_retained(locked_store: S3Storage, s3_admin: Any) -> None:
    locked_store.put("locks/0123abcd", b"{}")
    assert "ObjectLockMode" not in s3_admin.head_object(Bucket=locked_store.bucket, Key="repo/locks/0123abcd")
    locked_store.delete("locks/0123abcd")
    assert not locked_store.exists("locks/0123abcd")


def test_delete_many_reports_locked_keys_and_removes_the_rest(locked_store: S3Storage, s3_admin: Any) -> None:
    locked_store.put("chunks/ab/ab01", b"locked")
    s3_admin.put_object(Bucket=locked_store.bucket, Key="repo/chunks/ab/ab02", Body=b"free")  # no retention
    failed = locked_store.delete_many(["chunks/ab/ab01", "chunks/ab/ab02", "chunks/ab/absent"])
    assert list(failed) == ["chunks/ab/ab01"] and isinstance(failed["chunks/ab/ab01"], ObjectLockedError)
    assert list(locked_store.list("chunks/")) == ["chunks/ab/ab01"]


def test_compliance_mode(make_bucket: Callable[..., str], s3_options: dict[str, Any], s3_admin: Any) -> None:
    options = s3_options | {"object_lock_mode": "compliance", "object_lock_days": 1}
    store = open_s3_storage(f"s3://{make_bucket(object_lock=True)}/repo", options)
    store.put("manifests/b1", b"m")
    assert s3_admin.head_object(Bucket=store.bucket, Key="repo/manifests/b1")["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ObjectLockedError):
        store.delete("manifests/b1")


def test_object_lock_on_a_bucket_without_it_is_a_clear_error(s3_bucket: str, s3_options: dict[str, Any]) -> None:
    options = s3_options | {"object_lock_mode": "governance", "object_lock_days": 1}
    store = open_s3_storage(f"s3://{s3_bucket}/repo", options)
    with pytest.raises(StorageError, match=f"bucket {s3_bucket} has no Object Lock") as info:
        store.put("config", b"{}")
    assert "\n" not in str(info.value)


def test_server_side_encryption_is_asked_for(s3_bucket: str, s3_options: dict[str, Any], s3_admin: Any) -> None:
    store = open_s3_storage(f"s3://{s3_bucket}/repo", s3_options | SMALL_PARTS | {"sse": "AES256"})
    store.put("chunks/ab/ab01", b"secret data")
    store.put("chunks/bi/big", os.urandom(9 * MIB))  # multipart too
    for key in ("chunks/ab/ab01", "chunks/bi/big"):
        assert s3_admin.head_object(Bucket=s3_bucket, Key=f"repo/{key}")["ServerSideEncryption"] == "AES256"
    assert store.get("chunks/ab/ab01") == b"secret data"


# ---------------------------------------------------------------- errors, retries


def test_access_denied_is_a_permission_error(
    s3_bucket: str, s3_options: dict[str, Any], iam_user: Callable[..., dict[str, str]]
) -> None:
    store = open_s3_storage(f"s3://{s3_bucket}/repo", s3_options)
    store.put("config", b"{}")
    denied = open_s3_storage(f"s3://{s3_bucket}/repo", s3_options | iam_user(deny=["s3:PutObject"]))
    assert denied.get("config") == b"{}"
    with pytest.raises(StoragePermissionError) as info:
        denied.put("manifests/m1", b"m")
    assert str(info.value) == f"storage s3://{s3_bucket}/repo: permission denied on manifests/m1 (AccessDenied)"
    assert info.value.exit_code == 11


def test_retention_is_kept_where_versioning_cannot_be_read(
    make_bucket: Callable[..., str], s3_options: dict[str, Any], iam_user: Callable[..., dict[str, str]]
) -> None:
    """Without s3:GetBucketVersioning, Object Lock in the options says the bucket keeps versions."""
    bucket = make_bucket(object_lock=True)
    options = s3_options | {"object_lock_mode": "governance", "object_lock_days": 1}
    store = open_s3_storage(f"s3://{bucket}/repo", options | iam_user(deny=["s3:GetBucketVersioning"]))
    store.put("chunks/ab/ab01", b"kept")
    store.put("locks/l1", b"{}")
    with pytest.raises(ObjectLockedError):
        store.delete("chunks/ab/ab01")
    store.delete("locks/l1")
    assert list(store.list("")) == ["chunks/ab/ab01"]


def test_missing_bucket(s3_options: dict[str, Any]) -> None:
    store = open_s3_storage("s3://genievm-no-such-bucket/repo", s3_options)
    assert not store.exists("config")
    for call in (lambda: store.get("config"), lambda: store.put("config", b"{}"), lambda: list(store.list(""))):
        with pytest.raises(StorageError, match="bucket genievm-no-such-bucket does not exist") as info:
            call()
        assert type(info.value) is StorageError


def test_an_unreachable_endpoint(s3_bucket: str, s3_options: dict[str, Any]) -> None:
    store = open_s3_storage(
        f"s3://{s3_bucket}/repo", s3_options | {"endpoint_url": f"http://127.0.0.1:{unused_port()}", "max_attempts": 2}
    )
    with pytest.raises(StorageError, match="cannot connect to the S3 endpoint http://127.0.0.1"):
        store.get("config")


def test_throttling_is_retried(s3_bucket: str, s3_options: dict[str, Any]) -> None:
    with_faults = FaultyNetwork(s3_options["endpoint_url"])
    try:
        store = open_s3_storage(f"s3://{s3_bucket}/repo", s3_options | {"endpoint_url": with_faults.url})
        store.put("config", b"{}")
        with_faults.slow_down(2)
        assert store.get("config") == b"{}"
        assert with_faults.throttled == 2
        with_faults.slow_down(100)
        few_tries = open_s3_storage(
            f"s3://{s3_bucket}/repo", s3_options | {"endpoint_url": with_faults.url, "max_attempts": 2}
        )
        with pytest.raises(StorageError, match=r"S3 is throttling requests \(SlowDown\), still after 2 tries"):
            few_tries.get("config")
    finally:
        with_faults.close()


def test_connections_cut_mid_upload_are_retried(store: S3Storage, s3_options: dict[str, Any]) -> None:
    with_faults = FaultyNetwork(s3_options["endpoint_url"])
    try:
        through = open_s3_storage(store.url, s3_options | SMALL_PARTS | {"endpoint_url": with_faults.url})
        with_faults.cut_uploads(3, after=256 << 10)
        small, big = os.urandom(MIB), os.urandom(12 * MIB)
        through.put("chunks/sm/small", small)
        through.put("chunks/bi/big", big)
        assert with_faults.cuts == 3
        assert store.get("chunks/sm/small") == small and store.get("chunks/bi/big") == big
    finally:
        with_faults.close()


def test_server_side_encryption_with_a_kms_key(s3_bucket: str, s3_options: dict[str, Any], s3_admin: Any) -> None:
    kms = boto3.client(
        "kms",
        endpoint_url=s3_options["endpoint_url"],
        region_name=REGION,
        aws_access_key_id=KEYS["access_key_id"],
        aws_secret_access_key=KEYS["secret_access_key"],
    )
    key_id = kms.create_key(Description="genievm test")["KeyMetadata"]["KeyId"]
    store = open_s3_storage(f"s3://{s3_bucket}/repo", s3_options | {"sse": "aws:kms", "sse_kms_key_id": key_id})
    store.put("manifests/m1", b"manifest")
    head = s3_admin.head_object(Bucket=s3_bucket, Key="repo/manifests/m1")
    assert head["ServerSideEncryption"] == "aws:kms" and key_id in head["SSEKMSKeyId"]
    assert store.get("manifests/m1") == b"manifest"


def test_connections_cut_mid_download_are_retried(store: S3Storage, s3_options: dict[str, Any]) -> None:
    data = os.urandom(2 * MIB)
    store.put("chunks/ab/ab01", data)
    with_faults = FaultyNetwork(s3_options["endpoint_url"])
    try:
        through = open_s3_storage(store.url, s3_options | {"endpoint_url": with_faults.url})
        with_faults.cut_downloads(2, after=512 << 10)
        with structlog.testing.capture_logs() as logs:
            assert through.get("chunks/ab/ab01") == data
        assert with_faults.cuts == 2
        # asked again under the core's retry policy (genievm_core.repository.retry), which logs each retry
        retries = [(e["operation"], e["key"], e["attempt"]) for e in logs if e["event"] == "storage.retry"]
        assert retries == [("get", "chunks/ab/ab01", 1), ("get", "chunks/ab/ab01", 2)]
        with_faults.cut_downloads(100, after=512 << 10)
        few_tries = open_s3_storage(store.url, s3_options | {"endpoint_url": with_faults.url, "max_attempts": 2})
        with pytest.raises(StorageError, match=r"chunks/ab/ab01") as failed:
            few_tries.get("chunks/ab/ab01")
        assert "after 2 tries" in str(failed.value) and type(failed.value) is StorageError
    finally:
        with_faults.close()
