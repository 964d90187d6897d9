"""Manifest and repository-config models: JSON round trips, unsafe names, format versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from support import PASSPHRASE, RepoFactory, open_repo

from genievm_core.errors import CorruptionError, UnsupportedFormatError
from genievm_core.models.manifest import (
    MAX_DISK_SIZE,
    BackupManifest,
    BackupStats,
    CBTRecord,
    DiskRecord,
    RepositoryConfig,
    VMRecord,
)
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.storage import open_storage

safe_names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._@+-]{0,30}\Z")
backup_ids = st.builds(
    lambda t, h: t.strftime("%Y%m%dT%H%M%S.%fZ-") + h,
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1)),
    st.from_regex(r"\A[0-9a-f]{8}\Z"),
)
times = st.datetimes(timezones=st.just(UTC))
counts = st.integers(0, 1 << 50)
stats = st.builds(
    BackupStats,
    **{name: counts for name in BackupStats.model_fields},  # type: ignore[arg-type]
)
cbt = st.builds(
    CBTRecord,
    mode=st.sampled_from(["full", "cbt", "hash-compare"]),
    source=st.none() | st.text(max_size=20),
    reason=st.none() | st.text(max_size=40),
    token=st.none() | st.text(max_size=40),
)


def disks_of(backup_id: str) -> st.SearchStrategy[tuple[DiskRecord, ...]]:
    """Disks of one backup: names unique, each with its index in that backup (as the manifest requires)."""
    return st.lists(safe_names, max_size=4, unique=True).flatmap(
        lambda names: st.tuples(
            *(
                st.builds(
                    DiskRecord,
                    name=st.just(name),
                    size=st.integers(0, MAX_DISK_SIZE),
                    chunk_size=st.sampled_from([4096, 65536, 4 << 20]),
                    chunk_count=st.integers(0, 1 << 30),
                    index=st.just(f"indexes/{backup_id}/{name}"),
                    checksum=st.from_regex(r"\A[0-9a-f]{64}\Z"),
                    format=st.sampled_from(["raw", "qcow2", "vmdk"]),
                    cbt=cbt,
                    stats=stats,
                )
                for name in names
            )
        )
    )


summary_values = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 60), 1 << 60)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
vms = st.builds(
    VMRecord,
    id=safe_names,
    name=st.text(min_size=1, max_size=40).filter(
        lambda s: s.isprintable() and "/" not in s and "\\" not in s and s not in (".", "..")
    ),
    provider=st.sampled_from(["image", "kvm", "vmware"]),
    config=st.none() | st.text(max_size=80),
    config_format=st.none() | st.text(max_size=20),
    summary=st.dictionaries(st.text(max_size=10), summary_values, max_size=4),
)
manifests = backup_ids.flatmap(
    lambda backup_id: st.builds(
        BackupManifest,
        backup_id=st.just(backup_id),
        repository_id=st.from_regex(r"\A[0-9a-f]{32}\Z"),
        vm=vms,
        kind=st.sampled_from(["full", "incremental"]),
        parent_id=st.none() | backup_ids,
        started_at=times,
        finished_at=times,
        disks=disks_of(backup_id),
        stats=stats,
        tags=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
    )
)


@settings(max_examples=60, deadline=None)
@given(manifests)
def test_manifest_json_round_trip(manifest: BackupManifest) -> None:
    text = manifest.model_dump_json()
    back = BackupManifest.model_validate_json(text)
    assert back == manifest
    assert BackupManifest.model_validate(json.loads(text)) == manifest


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "encrypted"])
def shared_repo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Repository:
    path = tmp_path_factory.mktemp("manifest-repo")
    host = PluginHost()
    Repository.init(open_storage(host, str(path)), passphrase=PASSPHRASE if request.param else None, chunk_size=65536)
    return open_repo(host, path, PASSPHRASE if request.param else None)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifests)
def test_manifest_round_trip_through_the_repository(shared_repo: Repository, manifest: BackupManifest) -> None:
    manifest = manifest.model_copy(update={"repository_id": shared_repo.config.repository_id})
    shared_repo.put_manifest(manifest)
    assert shared_repo.get_manifest(manifest.backup_id) == manifest
    assert manifest.backup_id in shared_repo.backup_ids()


UNSAFE = ["../x", "..", ".", "", "a/b", "/etc", ".hidden", "-rf", "a b", "a\x00b", "x" * 129, "vda\n", "é"]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_disk_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        DiskRecord(
            name=name, size=1, chunk_size=4096, chunk_count=1, index="i", checksum="0" * 64, cbt=CBTRecord(mode="full")
        )


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_vm_ids_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        VMRecord(id=name, name="n", provider="image")


@pytest.mark.parametrize(
    "value",
    ["../x", "20260101T000000Z", "20260101T000000.000000Z-XYZ12345", "latest", "20260101T000000.000000Z-0123abcd\n"],
)
def test_backup_ids_are_checked(value: str) -> None:
    base = dict(
        repository_id="0" * 32,
        vm=VMRecord(id="vm", name="vm", provider="image"),
        kind="full",
        started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
        disks=(),
    )
    with pytest.raises(ValidationError):
        BackupManifest(backup_id=value, **base)
    with pytest.raises(ValidationError):
        BackupManifest(backup_id="20260101T000000.000000Z-0123abcd", parent_id=value, **base)


def test_disk_size_and_extra_fields() -> None:
    record = dict(name="vda", chunk_size=4096, chunk_count=1, index="i", checksum="0" * 64, cbt={"mode": "full"})
    with pytest.raises(ValidationError):
        DiskRecord(size=MAX_DISK_SIZE + 1, **record)
    with pytest.raises(ValidationError):
        DiskRecord(size=-1, **record)
    with pytest.raises(ValidationError, match="Extra inputs"):
        DiskRecord(size=1, surprise=True, **record)


@pytest.mark.parametrize("size", [0, 1000, 2048, 65535, 3 << 20, 1 << 27])
def test_repository_chunk_size_must_be_a_power_of_two_in_range(size: int) -> None:
    with pytest.raises(ValidationError, match="power of two"):
        RepositoryConfig(repository_id="r", created_at=datetime.now(UTC), chunk_size=size, chunk_id="blake3")


def _write_manifest_json(repo: Repository, backup_id: str, raw: dict[str, Any]) -> None:
    key = f"manifests/{backup_id}"
    repo.storage.put(key, repo.codec.encode(key, json.dumps(raw).encode()))


def _valid_raw(repo: Repository, backup_id: str) -> dict[str, Any]:
    return {
        "format_version": 1,
        "backup_id": backup_id,
        "repository_id": repo.config.repository_id,
        "vm": {"id": "vm1", "name": "vm1", "provider": "image"},
        "kind": "full",
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:01Z",
        "disks": [
            {
                "name": "vda",
                "size": 4096,
                "chunk_size": 65536,
                "chunk_count": 1,
                "index": f"indexes/{backup_id}/vda",
                "checksum": "0" * 64,
                "cbt": {"mode": "full"},
            }
        ],
    }


def test_a_hostile_manifest_is_corruption(new_repo: RepoFactory) -> None:
    repo, _ = new_repo()
    bid = "20260101T000000.000000Z-0000abcd"
    raw = _valid_raw(repo, bid)
    _write_manifest_json(repo, bid, raw)
    assert repo.get_manifest(bid).disks[0].name == "vda"
    raw["disks"][0]["name"] = "../../etc/passwd"
    _write_manifest_json(repo, bid, raw)
    with pytest.raises(CorruptionError, match=f"manifest {bid} is corrupt"):
        repo.get_manifest(bid)


def test_a_manifest_naming_another_backup_or_repository_is_corruption(new_repo: RepoFactory) -> None:
    repo, _ = new_repo()
    bid, other = "20260101T000000.000000Z-0000abcd", "20260101T000000.000000Z-0000ffff"
    _write_manifest_json(repo, bid, _valid_raw(repo, other))
    with pytest.raises(CorruptionError, match="another backup"):
        repo.get_manifest(bid)
    raw = _valid_raw(repo, bid)
    raw["repository_id"] = "f" * 32
    _write_manifest_json(repo, bid, raw)
    with pytest.raises(CorruptionError, match="another backup or repository"):
        repo.get_manifest(bid)


def test_newer_formats_are_refused(new_repo: RepoFactory, host: PluginHost) -> None:
    repo, path = new_repo()
    bid = "20260101T000000.000000Z-0000abcd"
    raw = _valid_raw(repo, bid)
    raw["format_version"] = 2
    _write_manifest_json(repo, bid, raw)
    with pytest.raises(UnsupportedFormatError, match="format 2"):
        repo.get_manifest(bid)
    config = json.loads((path / "config").read_text())
    (path / "config").write_text(json.dumps(config | {"format_version": 3}))  # configs are at format 2
    with pytest.raises(UnsupportedFormatError, match="format 3"):
        open_repo(host, path)
    (path / "config").write_text(json.dumps(config | {"features": ["dedup-v9"]}))
    with pytest.raises(UnsupportedFormatError, match="dedup-v9"):
        open_repo(host, path)
    (path / "config").write_text(json.dumps(config)[:-20])
    with pytest.raises(CorruptionError, match="config"):
        open_repo(host, path)


@pytest.mark.parametrize("name", ["../x", "..", ".", "", "a/b", "/etc", "a\\b", "a\x00b", "vm\n", "x" * 256])
def test_vm_names_are_never_paths(name: str) -> None:
    """Regression: a manifest's VM name went into restored file names (``<name>-<disk>.qcow2``) unchecked."""
    with pytest.raises(ValidationError, match="name"):
        VMRecord(id="vm", name=name, provider="kvm")
    assert VMRecord(id="vm", name="web 01 (prod) é", provider="kvm").name == "web 01 (prod) é"


def test_disks_are_unique_and_name_their_own_index(new_repo: RepoFactory) -> None:
    """Regression: a manifest could name one disk twice, or an index outside its backup (even ``indexes/../config``)."""
    repo, _ = new_repo()
    bid = "20260101T000000.000000Z-0000abcd"
    raw = _valid_raw(repo, bid)
    for disks in ([raw["disks"][0], raw["disks"][0]], [raw["disks"][0] | {"index": "indexes/../config"}]):
        _write_manifest_json(repo, bid, raw | {"disks": disks})
        with pytest.raises(CorruptionError, match=f"manifest {bid} is corrupt"):
            repo.get_manifest(bid)
