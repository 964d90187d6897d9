"""The ``genievm`` command with a repository in S3 (a real moto server over HTTP): a whole
backup, incremental, restore and verify cycle; connections cut mid-upload; and the one-line
errors of wrong credentials, a missing bucket, missing credentials and bad options."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faulty_network import FaultyNetwork
from s3_testbed import KEYS, REGION

from genievm_core.testing import run_cli
from genievm_core.testing.cli import error_lines

CHUNK = 65536
PASSPHRASE = "correct horse battery staple"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)

    def one_error_line(self, code: int) -> str:
        assert self.code == code, f"exit {self.code}: {self.stderr!r}"
        lines = error_lines(self.stderr)
        assert len(lines) == 1 and lines[0].startswith("genievm: error: "), self.stderr
        return lines[0]


Run = Callable[..., Result]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``genievm ARGS`` in this process (the function the console script calls), with ``env`` set."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> Result:
        return Result(*run_cli(monkeypatch, capsys, *args, env=env))

    return run


@pytest.fixture
def aws_env(s3_endpoint: str) -> dict[str, str]:
    """Credentials from the standard AWS chain (environment), the endpoint from GENIEVM_STORAGE_OPTIONS."""
    return {
        "AWS_ACCESS_KEY_ID": KEYS["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": KEYS["secret_access_key"],
        "AWS_DEFAULT_REGION": REGION,
        "GENIEVM_STORAGE_OPTIONS": json.dumps({"endpoint_url": s3_endpoint, "addressing_style": "path"}),
        "GENIEVM_PASSPHRASE": PASSPHRASE,
    }


def write_image(path: Path, layout: list[tuple[int, bytes]], size: int = 24 * CHUNK) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in layout:
            f.seek(offset)
            f.write(data)
    return path


def test_backup_incremental_restore_verify(
    cli: Run, aws_env: dict[str, str], s3_bucket: str, s3_admin: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    url = f"s3://{s3_bucket}/site/repo"
    image = write_image(tmp_path / "vda.img", [(0, os.urandom(5 * CHUNK)), (10 * CHUNK, b"genievm " * 20000)])
    init = cli("repo", "init", url, "--chunk-size", str(CHUNK), "--json", env=aws_env).json()
    assert init["url"] == url and init["chunk_id"] == "blake3-keyed"

    full = cli("backup", "--vm", "web01", "--repo", url, "--disk", f"vda={image}", "--json", env=aws_env).json()
    assert full["kind"] == "full" and full["stats"]["chunks_new"] == 7  # chunks 10 and 11 are the same

    with open(image, "r+b") as f:  # two chunks change
        f.seek(2 * CHUNK)
        f.write(os.urandom(CHUNK))
        f.seek(20 * CHUNK)
        f.write(os.urandom(100))
    job = tmp_path / "job.json"  # this time the endpoint comes from the job config's storageOptions
    job.write_text(
        json.dumps(
            {
                "vmId": "web01",
                "backupPath": url,
                "providerOptions": {"vms": {"web01": {"vda": str(image)}}},
                "storageOptions": {"endpointUrl": s3_endpoint, "addressingStyle": "path"},
            }
        )
    )
    env = {k: v for k, v in aws_env.items() if k != "GENIEVM_STORAGE_OPTIONS"}
    incremental = cli("backup", "--config", str(job), "--json", env=env).json()
    assert incremental["kind"] == "incremental" and incremental["parent_id"] == full["backup_id"]
    assert incremental["stats"]["chunks_new"] == 2

    restored = cli("restore", "--vm", "web01", "--repo", url, "--target", str(tmp_path / "out"), env=aws_env)
    assert restored.code == 0, restored.stderr
    assert "verified" in restored.stdout and incremental["backup_id"] in restored.stdout
    assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()
    verify = cli("verify", "--repo", url, "--read-data", "--json", env=aws_env).json()
    assert {r["backup_id"] for r in verify} == {full["backup_id"], incremental["backup_id"], "repository"}
    assert all(r["problems"] == [] and r["checked"] > 0 for r in verify)

    keys = [o["Key"] for o in s3_admin.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert all(k.startswith("site/repo/") for k in keys)
    assert sum(k.startswith("site/repo/manifests/") for k in keys) == 2
    assert sum(k.startswith("site/repo/chunks/") for k in keys) == 9
    assert not any(k.startswith("site/repo/locks/") for k in keys), "locks are released"


def test_connections_cut_mid_upload_are_retried_and_the_backup_verifies(
    cli: Run, aws_env: dict[str, str], s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    url = f"s3://{s3_bucket}/repo"
    image = write_image(tmp_path / "vda.img", [(0, os.urandom(12 * CHUNK))])
    assert cli("repo", "init", url, "--chunk-size", str(CHUNK), env=aws_env).code == 0
    bad_network = FaultyNetwork(s3_endpoint)
    try:
        bad_network.cut_uploads(3, after=CHUNK // 2)  # three chunk uploads reset half way through their body
        through = ["--storage-option", f"endpoint_url={bad_network.url}"]
        backup = cli(*through, "backup", "--vm", "db", "--repo", url, "--disk", f"vda={image}", "--json", env=aws_env)
        assert backup.json()["stats"]["chunks_new"] == 12
        assert bad_network.cuts == 3
    finally:
        bad_network.close()
    verify = cli("verify", "--repo", url, "--read-data", env=aws_env)
    assert verify.code == 0, verify.stderr
    restored = cli("restore", "--vm", "db", "--repo", url, "--target", str(tmp_path / "out"), env=aws_env)
    assert restored.code == 0, restored.stderr
    assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()


def test_wrong_credentials_are_one_line_without_secrets(
    cli: Run, aws_env: dict[str, str], s3_bucket: str, iam_user: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    url = f"s3://{s3_bucket}/repo"
    user = iam_user()
    env = {k: v for k, v in aws_env.items() if not k.startswith("AWS_")}
    right = ["--storage-option", f"access_key_id={user['access_key_id']}"]
    right += ["--storage-option", f"secret_access_key={user['secret_access_key']}"]
    assert cli(*right, "repo", "init", url, "--encryption", "none", env=env).code == 0, "the right keys work"

    wrong_secret = "wrong-secret-0123456789abcdefghijklmnopq"
    wrong = ["--storage-option", f"access_key_id={user['access_key_id']}"]
    wrong += ["--storage-option", f"secret_access_key={wrong_secret}"]
    result = cli(*wrong, "repo", "info", url, env=env)
    line = result.one_error_line(11)
    assert line == (
        f"genievm: error: storage {url}: permission denied: the S3 credentials were refused (SignatureDoesNotMatch)"
    )
    assert wrong_secret not in result.stderr + result.stdout
    assert user["secret_access_key"] not in result.stderr

    unknown = {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNUNKNOWN00", "AWS_SECRET_ACCESS_KEY": wrong_secret}
    image = write_image(tmp_path / "vda.img", [(0, b"x" * CHUNK)])
    result = cli("backup", "--vm", "web01", "--repo", url, "--disk", f"vda={image}", env=env | unknown)
    assert "the S3 credentials were refused (InvalidAccessKeyId)" in result.one_error_line(11)
    assert wrong_secret not in result.stderr


def test_read_only_credentials_list_verify_and_restore_without_a_lock(
    cli: Run, aws_env: dict[str, str], s3_bucket: str, iam_user: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """An IAM user whose policy allows reading only (moto evaluates it): the lock's put is refused (exit 11
    before), so the read-only commands read on without one, after a warning; a backup is still refused."""
    url = f"s3://{s3_bucket}/repo"
    image = write_image(tmp_path / "vda.img", [(0, os.urandom(3 * CHUNK)), (9 * CHUNK, os.urandom(CHUNK))])
    assert cli("repo", "init", url, "--chunk-size", str(CHUNK), env=aws_env).code == 0
    backup = cli("backup", "--vm", "web01", "--repo", url, "--disk", f"vda={image}", "--json", env=aws_env).json()

    reader = iam_user(allow=["s3:GetObject", "s3:ListBucket"])
    env = {k: v for k, v in aws_env.items() if not k.startswith("AWS_")}
    keys = ["--storage-option", f"access_key_id={reader['access_key_id']}"]
    keys += ["--storage-option", f"secret_access_key={reader['secret_access_key']}"]
    keys += ["--storage-option", f"region={REGION}"]

    listed = cli(*keys, "backups", "list", "--repo", url, "--json", env=env).json()
    assert [b["backup_id"] for b in listed] == [backup["backup_id"]]
    verify = cli(*keys, "verify", "--repo", url, "--read-data", env=env)
    assert verify.code == 0, verify.stderr
    assert "lock.skipped" in verify.stderr and f"storage {url}: permission denied on locks/" in verify.stderr
    restore = cli(*keys, "restore", "--vm", "web01", "--repo", url, "--target", str(tmp_path / "out"), env=env)
    assert restore.code == 0, restore.stderr
    assert "lock.skipped" in restore.stderr
    assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()
    assert reader["secret_access_key"] not in verify.stderr + restore.stderr

    refused = cli(*keys, "backup", "--vm", "web01", "--repo", url, "--disk", f"vda={image}", env=env)
    assert refused.one_error_line(11).startswith(f"genievm: error: storage {url}: permission denied on locks/")


def test_missing_bucket_is_one_line(cli: Run, aws_env: dict[str, str], tmp_path: Path) -> None:
    url = "s3://genievm-no-such-bucket/repo"
    line = cli("repo", "init", url, env=aws_env).one_error_line(9)
    assert (
        line
        == f"genievm: error: storage {url}: bucket genievm-no-such-bucket does not exist (create it, or check the name)"
    )
    image = write_image(tmp_path / "vda.img", [(0, b"x" * CHUNK)])
    result = cli("backup", "--vm", "web01", "--repo", url, "--disk", f"vda={image}", env=aws_env)
    assert "bucket genievm-no-such-bucket does not exist" in result.one_error_line(9)


def test_no_credentials_is_one_line(cli: Run, aws_env: dict[str, str], s3_bucket: str) -> None:
    env = {k: v for k, v in aws_env.items() if not k.startswith("AWS_")}
    line = cli("repo", "init", f"s3://{s3_bucket}/repo", env=env).one_error_line(11)
    assert "permission denied: no S3 credentials found" in line


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--storage-option", "endpoint=http://x"], "S3 storage options: endpoint: Extra inputs are not permitted"),
        (
            ["--storage-option", "max_attempts=lots"],
            "S3 storage options: max_attempts: Input should be a valid integer",
        ),
        (["--storage-option", "s3cr3t-without-key"], "invalid configuration: --storage-option: give KEY=VALUE"),
    ],
)
def test_bad_storage_options_are_one_line(
    cli: Run, aws_env: dict[str, str], s3_bucket: str, args: list[str], problem: str
) -> None:
    line = cli(*args, "repo", "info", f"s3://{s3_bucket}/repo", env=aws_env).one_error_line(3)
    assert problem in line


def test_bad_storage_options_variable_is_one_line(cli: Run, aws_env: dict[str, str], s3_bucket: str) -> None:
    env = aws_env | {"GENIEVM_STORAGE_OPTIONS": "endpoint_url=http://x"}
    line = cli("repo", "info", f"s3://{s3_bucket}/repo", env=env).one_error_line(3)
    assert "GENIEVM_STORAGE_OPTIONS: not a JSON object" in line


def test_prune_and_gc_respect_object_lock(
    cli: Run, aws_env: dict[str, str], make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    """Objects under S3 Object Lock retention are never deleted early: prune and GC report them and go on."""
    bucket = make_bucket(object_lock=True)
    image = tmp_path / "vda.img"

    def two_backups(url: str, lock: list[str]) -> tuple[str, str]:
        assert cli(*lock, "repo", "init", url, "--chunk-size", str(CHUNK), env=aws_env).code == 0
        ids = []
        for _ in range(2):  # every chunk differs between the two backups
            write_image(image, [(0, os.urandom(4 * CHUNK))], size=4 * CHUNK)
            backup = cli(
                *lock, "backup", "--vm", "web01", "--repo", url, "--disk", f"vda={image}", "--json", env=aws_env
            )
            ids.append(backup.json()["backup_id"])
        return ids[0], ids[1]

    def prune(url: str, lock: list[str]) -> dict[str, Any]:
        args = ["prune", "--repo", url, "--vm", "web01", "--keep-last", "1", "--grace", "0", "--json"]
        return dict(cli(*lock, *args, env=aws_env).json())

    everything = ["--storage-option", "object_lock_mode=governance", "--storage-option", "object_lock_days=1"]
    old, new = two_backups(f"s3://{bucket}/all-locked", everything)
    report = prune(f"s3://{bucket}/all-locked", everything)
    assert report["removed_backups"] == [] and f"manifests/{old}" in report["not_deletable_keys"]
    listed = cli("backups", "list", "--repo", f"s3://{bucket}/all-locked", "--json", env=aws_env).json()
    assert {b["backup_id"] for b in listed} == {old, new}, "a backup whose manifest is locked is kept whole"

    chunks_only = [*everything, "--storage-option", 'object_lock_skip_prefixes=["locks/", "manifests/"]']
    url = f"s3://{bucket}/chunks-locked"
    old, new = two_backups(url, chunks_only)
    report = prune(url, chunks_only)
    assert report["removed_backups"] == [old], report
    assert report["not_deletable"] == 5 and report["deleted_objects"] == 0  # 4 chunks and the index of `old`
    assert all(k.startswith(("chunks/", "indexes/")) for k in report["not_deletable_keys"])
    verify = cli("verify", "--repo", url, "--read-data", "--json", env=aws_env).json()
    assert {r["backup_id"] for r in verify} == {new, "repository"} and all(not r["problems"] for r in verify)

    url = f"s3://{bucket}/unlocked"  # the same bucket without retention: GC deletes, in one batch
    old, new = two_backups(url, [])
    report = prune(url, [])
    assert report["removed_backups"] == [old] and report["deleted_objects"] == 5 and report["not_deletable"] == 0
    verify = cli("verify", "--repo", url, "--read-data", "--json", env=aws_env).json()
    assert {r["backup_id"] for r in verify} == {new, "repository"} and all(not r["problems"] for r in verify)


def test_a_downgraded_config_on_s3_is_refused(
    cli: Run, aws_env: dict[str, str], s3_bucket: str, s3_admin: Any, tmp_path: Path
) -> None:
    """Issue 22: whoever can write the bucket rewrites ``config`` as unencrypted; no backup follows it."""
    url = f"s3://{s3_bucket}/site/repo"
    image = write_image(tmp_path / "vda.img", [(0, os.urandom(3 * CHUNK))])
    assert cli("repo", "init", url, "--chunk-size", str(CHUNK), env=aws_env).code == 0
    assert cli("backup", "--vm", "v", "--repo", url, "--disk", f"vda={image}", env=aws_env).code == 0
    config = json.loads(s3_admin.get_object(Bucket=s3_bucket, Key="site/repo/config")["Body"].read())
    config.update(encryption=None, chunk_id="blake3")
    s3_admin.put_object(Bucket=s3_bucket, Key="site/repo/config", Body=json.dumps(config).encode())

    def objects() -> dict[str, str]:
        listed = s3_admin.list_objects_v2(Bucket=s3_bucket)["Contents"]
        return {o["Key"]: o["ETag"] for o in listed if "/locks/" not in o["Key"]}

    before = objects()
    for env in (aws_env, {k: v for k, v in aws_env.items() if k != "GENIEVM_PASSPHRASE"}):
        result = cli("backup", "--vm", "v", "--repo", url, "--disk", f"vda={image}", env=env)
        assert "does not match its checksum" in result.one_error_line(21)
    assert objects() == before


def test_stray_objects_in_the_bucket_are_reported_skipped_and_never_collected(
    cli: Run, aws_env: dict[str, str], s3_bucket: str, s3_admin: Any, tmp_path: Path
) -> None:
    """Issue 15, defect 1: objects GenieVM never wrote, under any prefix of the repository."""
    url = f"s3://{s3_bucket}/site/repo"
    image = write_image(tmp_path / "vda.img", [(0, os.urandom(3 * CHUNK))])
    assert cli("repo", "init", url, "--chunk-size", str(CHUNK), env=aws_env).code == 0
    assert cli("backup", "--vm", "v", "--repo", url, "--disk", f"vda={image}", env=aws_env).code == 0
    strays = ["manifests/zzjunk", "chunks/ab/abcd", "indexes/zzjunk", "log/zzjunk", "zzjunk", "photos/cat.jpg"]
    for key in strays:
        s3_admin.put_object(Bucket=s3_bucket, Key=f"site/repo/{key}", Body=b"junk")

    listed = cli("backups", "list", "--repo", url, "--json", env=aws_env)
    assert [b["vm"] for b in listed.json()] == ["v"]
    assert "manifests/zzjunk is not a GenieVM object" in listed.stderr
    assert cli("backup", "--vm", "v", "--repo", url, "--disk", f"vda={image}", env=aws_env).code == 0
    restored = cli("restore", "--vm", "v", "--repo", url, "--target", str(tmp_path / "out"), env=aws_env)
    assert restored.code == 0, restored.stderr

    verify = cli("verify", "--repo", url, "--json", env=aws_env)
    assert verify.code == 22, verify.stderr
    found = [p["detail"] for r in json.loads(verify.stdout) for p in r["problems"]]
    assert sorted(d.split()[0] for d in found) == sorted(strays), found
    gc = cli("gc", "--repo", url, "--grace", "0", "--json", env=aws_env)
    assert gc.code == 0, gc.stderr
    keys = {o["Key"] for o in s3_admin.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert {f"site/repo/{k}" for k in strays} <= keys
