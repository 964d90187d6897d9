"""A damaged repository is found out, never restored from silently, and reported in one line.

Damage is done to the real files of a filesystem repository: a flipped byte,
a deleted or swapped chunk file, a truncated manifest or index. The CLI runs
through ``genievm_core.cli.main`` (``cli`` fixture); exit codes are those of
docs/errors.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import (
    CHUNK,
    PASSPHRASE,
    CLIResult,
    RepoFactory,
    backup_vm,
    open_repo,
    random_bytes,
    restore_vm,
    stray_files,
    text_bytes,
    write_image,
)

from genievm_core.errors import (
    BackupNotFoundError,
    CorruptionError,
    PassphraseRequiredError,
    WrongPassphraseError,
)
from genievm_core.jobs import run_verify
from genievm_core.models.manifest import BackupManifest
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.testing import mounted_tmpfs

Cli = Callable[..., CLIResult]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def chunk_path(repo_path: Path, cid: bytes) -> Path:
    return repo_path / Repository.chunk_key(cid)


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def damaged_setup(
    request: pytest.FixtureRequest, host: PluginHost, new_repo: RepoFactory, tmp_path: Path
) -> Iterator[tuple[Repository, Path, BackupManifest, dict[str, str]]]:
    """A VM of two disks backed up into a fresh repository; the env the CLI needs to open it."""
    repo, path = new_repo(encrypted=request.param)
    disks = {
        "vda": write_image(
            tmp_path / "vda.img", 6 * CHUNK + 100, [(0, random_bytes(2 * CHUNK, 1)), (4 * CHUNK, text_bytes(CHUNK))]
        ),
        "vdb": write_image(tmp_path / "vdb.img", 3 * CHUNK, [(CHUNK, random_bytes(CHUNK, 2))]),
    }
    manifest = backup_vm(host, repo, "vm1", disks)
    env = {"GENIEVM_PASSPHRASE": PASSPHRASE} if request.param else {}
    yield repo, path, manifest, env


def index_of(repo: Repository, manifest: BackupManifest, disk: str) -> list[bytes]:
    record = next(d for d in manifest.disks if d.name == disk)
    return list(repo.get_index(record.index))


def assert_one_error_line(result: CLIResult, code: int, *fragments: str) -> None:
    assert result.code == code, f"exit {result.code}, stderr: {result.stderr!r}"
    assert len(result.err_lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    line = result.err_lines[0]
    assert line.startswith("genievm: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"


# ---------------------------------------------------------------- passphrases


def test_wrong_passphrase(host: PluginHost, new_repo: RepoFactory, cli: Cli, tmp_path: Path) -> None:
    _, path = new_repo(encrypted=True)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        open_repo(host, path, "not the passphrase")
    assert open_repo(host, path, PASSPHRASE).config.encryption is not None

    result = cli("repo", "info", str(path), env={"GENIEVM_PASSPHRASE": "not the passphrase"})
    assert_one_error_line(result, 17, "wrong passphrase for repository")
    assert "not the passphrase" not in result.stderr + result.stdout

    pass_file = tmp_path / "pass"
    pass_file.write_text("also wrong\n")
    result = cli("backups", "list", "--repo", str(path), "--passphrase-file", str(pass_file))
    assert_one_error_line(result, 17, "wrong passphrase")
    pass_file.write_text(PASSPHRASE + "\n")
    assert cli("backups", "list", "--repo", str(path), "--passphrase-file", str(pass_file), "--json").code == 0


def test_passphrase_required(host: PluginHost, new_repo: RepoFactory, cli: Cli) -> None:
    _, path = new_repo(encrypted=True)
    with pytest.raises(PassphraseRequiredError):
        open_repo(host, path, None)
    assert_one_error_line(cli("repo", "info", str(path)), 18, "GENIEVM_PASSPHRASE")


# ---------------------------------------------------------------- a corrupt chunk


def test_corrupt_chunk(
    damaged_setup: tuple[Repository, Path, BackupManifest, dict[str, str]], host: PluginHost, cli: Cli, tmp_path: Path
) -> None:
    repo, path, manifest, env = damaged_setup
    cid = index_of(repo, manifest, "vda")[1]  # chunk 1 of vda: random data, stored uncompressed
    target = chunk_path(path, cid)
    flip_byte(target, target.stat().st_size // 2)

    # presence alone looks fine; reading the data finds it
    assert cli("verify", "--repo", str(path), env=env).code == 0
    result = cli("verify", "--repo", str(path), "--read-data", "--json", env=env)
    assert result.code == 22
    reports = json.loads(result.stdout)
    problems = [(r["verifier"], p["disk"], p["chunk_index"]) for r in reports for p in r["problems"]]
    assert problems == [("data", "vda", 1)]
    assert cid.hex() in reports[1]["problems"][0]["detail"]
    assert_one_error_line(result, 22, "verification found 1 problems", f"{manifest.backup_id}:vda")

    reports = run_verify(host, repo, [manifest], read_data=True)
    assert [r.verifier for r in reports] == ["manifest", "data"] and reports[0].ok and not reports[1].ok

    with pytest.raises(CorruptionError, match=cid.hex()):
        restore_vm(host, repo, "vm1", tmp_path / "out1")
    assert list((tmp_path / "out1").glob("*")) == [], "a failed restore must leave nothing behind"

    result = cli("restore", "--vm", "vm1", "--repo", str(path), "--target", str(tmp_path / "out2"), env=env)
    assert_one_error_line(result, 21, f"chunk {cid.hex()} is corrupt")
    assert not (tmp_path / "out2").exists() or list((tmp_path / "out2").glob("*")) == []


def test_a_chunk_under_another_chunks_name(
    damaged_setup: tuple[Repository, Path, BackupManifest, dict[str, str]], host: PluginHost, tmp_path: Path
) -> None:
    repo, path, manifest, _ = damaged_setup
    ids = index_of(repo, manifest, "vda")
    chunk_path(path, ids[0]).write_bytes(chunk_path(path, ids[1]).read_bytes())
    with pytest.raises(CorruptionError, match=ids[0].hex()):
        repo.get_chunk(ids[0])
    with pytest.raises(CorruptionError):
        restore_vm(host, repo, "vm1", tmp_path / "out")
    assert stray_files(tmp_path) == []


def test_a_corrupt_compressed_chunk(
    damaged_setup: tuple[Repository, Path, BackupManifest, dict[str, str]], host: PluginHost
) -> None:
    repo, path, manifest, _ = damaged_setup
    cid = index_of(repo, manifest, "vda")[4]  # text: stored zstd-compressed
    target = chunk_path(path, cid)
    blob = target.read_bytes()
    assert blob[5] == 1
    flip_byte(target, len(blob) - 20)
    (report,) = [r for r in run_verify(host, repo, [manifest], read_data=True) if r.verifier == "data"]
    assert [(p.disk, p.chunk_index) for p in report.problems] == [("vda", 4)]


def test_a_damaged_zstd_header_in_a_chunk_file(
    host: PluginHost, new_repo: RepoFactory, cli: Cli, tmp_path: Path
) -> None:
    """One flipped bit in an unencrypted compressed chunk makes its frame claim an exabyte of content."""
    repo, path = new_repo()
    image = write_image(tmp_path / "vda.img", 2 * CHUNK, [(0, text_bytes(2 * CHUNK))])
    manifest = backup_vm(host, repo, "vm1", {"vda": image})
    target = chunk_path(path, index_of(repo, manifest, "vda")[0])
    blob = bytearray(target.read_bytes())
    assert blob[5] == 1 and blob[8:12] == b"\x28\xb5\x2f\xfd"  # zstd-compressed: a zstd frame follows the header
    blob[12] ^= 0x80  # the frame header descriptor's content-size flag
    target.write_bytes(bytes(blob))

    result = cli("verify", "--repo", str(path), "--read-data")
    assert_one_error_line(result, 22, f"{manifest.backup_id}:vda")
    result = cli("restore", "--vm", "vm1", "--repo", str(path), "--target", str(tmp_path / "out"))
    assert_one_error_line(result, 21, "is corrupt")


# ---------------------------------------------------------------- a missing chunk


def test_missing_chunk(
    damaged_setup: tuple[Repository, Path, BackupManifest, dict[str, str]], host: PluginHost, cli: Cli, tmp_path: Path
) -> None:
    repo, path, manifest, env = damaged_setup
    cid = index_of(repo, manifest, "vdb")[1]
    chunk_path(path, cid).unlink()

    result = cli("verify", "--repo", str(path), "--json", env=env)
    assert result.code == 22
    reports = json.loads(result.stdout)
    problems = [(r["verifier"], p["disk"], p["chunk_index"], p["detail"]) for r in reports for p in r["problems"]]
    assert problems == [("chunks", "vdb", 1, f"chunk {cid.hex()} is missing")]
    assert_one_error_line(result, 22, f"{manifest.backup_id}:vdb")
    assert cli("verify", "--repo", str(path), "--read-data", env=env).code == 22

    with pytest.raises(CorruptionError, match="missing"):
        restore_vm(host, repo, "vm1", tmp_path / "out1")
    assert list((tmp_path / "out1").glob("*")) == [], "vda was complete, but nothing of a failed restore remains"

    result = cli("restore", "--vm", "vm1", "--repo", str(path), "--target", str(tmp_path / "out2"), env=env)
    assert_one_error_line(result, 21, f"chunk {cid.hex()} is missing")


def test_a_failed_restore_keeps_what_was_there(
    damaged_setup: tuple[Repository, Path, BackupManifest, dict[str, str]], host: PluginHost, tmp_path: Path
) -> None:
    repo, path, manifest, _ = damaged_setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "vda.img").write_bytes(b"yesterday's vda")
    (out / "vdb.img").write_bytes(b"yesterday's vdb")
    chunk_path(path, index_of(repo, manifest, "vdb")[1]).unlink()
    with pytest.raises(CorruptionError):
        restore_vm(host, repo, "vm1", out, force=True)
    assert (out / "vda.img").read_bytes() == b"yesterday's vda"
    assert (out / "vdb.img").read_bytes() == b"yesterday's vdb"
    assert stray_files(out) == []


# ---------------------------------------------------------------- manifests and indexes


@pytest.mark.parametrize("keep", [0, 5, 0.5, -1], ids=["empty", "5-bytes", "half", "last-byte-cut"])
def test_truncated_manifest(
    damaged_setup: tuple[Repository, Path, BackupManifest, dict[str, str]], cli: Cli, tmp_path: Path, keep: float
) -> None:
    repo, path, manifest, env = damaged_setup
    target = path / "manifests" / manifest.backup_id
    size = target.stat().st_size
    os.truncate(target, int(size * keep) if isinstance(keep, float) else (keep if keep >= 0 else size - 1))

    with pytest.raises(CorruptionError, match=f"manifest {manifest.backup_id} is corrupt"):
        repo.get_manifest(manifest.backup_id)
    if keep != 0.5:
        return  # the CLI's handling is the same for every way of truncating: checked once per repository kind
    for args in (
        ["backups", "show", manifest.backup_id, "--repo", str(path)],
        ["backups", "list", "--repo", str(path)],
        ["restore", "--vm", "vm1", "--repo", str(path), "--target", str(tmp_path / "out")],
    ):
        assert_one_error_line(cli(*args, env=env), 21, f"manifest {manifest.backup_id} is corrupt")
    assert not (tmp_path / "out").exists()


def test_corrupt_index(
    damaged_setup: tuple[Repository, Path, BackupManifest, dict[str, str]], host: PluginHost, cli: Cli, tmp_path: Path
) -> None:
    repo, path, manifest, env = damaged_setup
    record = manifest.disks[1]
    flip_byte(path / record.index, (path / record.index).stat().st_size - 3)

    result = cli("verify", "--repo", str(path), "--json", env=env)
    assert result.code == 22
    problems = [(r["verifier"], p["disk"]) for r in json.loads(result.stdout) for p in r["problems"]]
    assert ("manifest", "vdb") in problems
    with pytest.raises(CorruptionError, match=record.index):
        restore_vm(host, repo, "vm1", tmp_path / "out")
    assert not (tmp_path / "out").exists(), "index damage is found before anything is written"


def test_missing_index(
    damaged_setup: tuple[Repository, Path, BackupManifest, dict[str, str]], host: PluginHost, tmp_path: Path
) -> None:
    repo, path, manifest, _ = damaged_setup
    (path / manifest.disks[0].index).unlink()
    with pytest.raises(CorruptionError, match="missing"):
        restore_vm(host, repo, "vm1", tmp_path / "out")
    reports = run_verify(host, repo, [manifest])
    assert [p.disk for r in reports for p in r.problems] == ["vda", "vda"]  # both verifiers name it


def test_an_index_from_another_backup_fails_its_checksum(
    damaged_setup: tuple[Repository, Path, BackupManifest, dict[str, str]], host: PluginHost, tmp_path: Path
) -> None:
    """An index swapped for a valid one of another disk: well formed, but not the one the manifest names."""
    repo, path, manifest, _ = damaged_setup
    vda, vdb = manifest.disks
    key = vda.index
    repo.storage.put(key, repo.codec.encode(key, repo.get_index(vdb.index).to_bytes()))
    with pytest.raises(CorruptionError, match=key):
        restore_vm(host, repo, "vm1", tmp_path / "out")
    reports = run_verify(host, repo, [manifest])
    assert any("vda" == p.disk for r in reports for p in r.problems)


def test_unknown_backup(damaged_setup: tuple[Repository, Path, BackupManifest, dict[str, str]], cli: Cli) -> None:
    repo, path, _, env = damaged_setup
    with pytest.raises(BackupNotFoundError):
        repo.find_backup("vm1", "20200101T000000.000000Z-00000000")
    with pytest.raises(BackupNotFoundError):
        repo.find_backup("nosuchvm", "latest")
    assert_one_error_line(
        cli("backups", "show", "20200101T000000.000000Z-00000000", "--repo", str(path), env=env),
        20,
        "no backup 20200101T000000.000000Z-00000000",
    )
    assert_one_error_line(cli("verify", "--repo", str(path), "--vm", "nosuchvm", "--backup", "latest", env=env), 20)


# ---------------------------------------------------------------- storage full during a backup


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tiny", "size=1m") as folder:
        yield folder


def test_full_storage_fails_the_backup_and_commits_nothing(
    host: PluginHost, cli: Cli, tiny_fs: Path, tmp_path: Path
) -> None:
    repo_path = tiny_fs / "repo"
    assert cli("repo", "init", str(repo_path), "--encryption", "none", "--chunk-size", str(CHUNK)).code == 0
    small = write_image(tmp_path / "small.img", CHUNK, [(0, random_bytes(1000, 1))])
    assert cli("backup", "--vm", "vm1", "--repo", str(repo_path), "--disk", f"vda={small}").code == 0
    big = write_image(tmp_path / "big.img", 32 * CHUNK, [(0, random_bytes(32 * CHUNK, 2))])  # 2 MiB > 1 MiB

    result = cli("backup", "--vm", "vm2", "--repo", str(repo_path), "--disk", f"vda={big}")
    assert_one_error_line(result, 10, "no space left")
    repo = open_repo(host, repo_path)
    assert [m.vm.id for m in repo.manifests()] == ["vm1"], "the failed backup must not be visible"
    assert list(repo.storage.list("locks/")) == [], "the failed backup must release its lock"
    assert list(repo.storage.list("indexes/")) == [f"indexes/{repo.backup_ids()[0]}/vda"]
    assert list(tiny_fs.rglob("*.tmp")) == []
    restore_vm(host, repo, "vm1", tmp_path / "out")
    assert (tmp_path / "out" / "vda.img").read_bytes() == small.read_bytes()


def test_a_full_restore_target_fails_with_one_line_and_leaves_nothing(
    host: PluginHost, new_repo: RepoFactory, cli: Cli, tiny_fs: Path, tmp_path: Path
) -> None:
    repo, repo_path = new_repo()
    big = write_image(tmp_path / "big.img", 32 * CHUNK, [(0, random_bytes(32 * CHUNK, 3))])  # 2 MiB > 1 MiB
    backup_vm(host, repo, "vm1", {"vda": big})

    result = cli("restore", "--vm", "vm1", "--repo", str(repo_path), "--target", str(tiny_fs / "out"))
    assert_one_error_line(result, 5, "vda.img: No space left on device")
    assert [p for p in tiny_fs.rglob("*") if p.is_file()] == [], "no partial disk is left behind"
    assert list(repo.storage.list("locks/")) == []
