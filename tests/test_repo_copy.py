"""``genievm repo copy SRC DST``: backups copied into another repository, only the chunks it lacks sent.

Between repositories of different keys every chunk is encrypted anew and named by the target's id key;
between repositories that name chunks alike (both unencrypted) a chunk the target has is not even read.
The copies verify with ``--read-data`` and restore bit for bit. (Filesystem to S3, S3 to S3 and a copy
killed and resumed: plugins/genievm_storage_s3/tests/test_s3_copy.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from support import (
    CHUNK,
    PASSPHRASE,
    CLIResult,
    backup_vm,
    chunk_files,
    genievm_path,
    patch_image,
    random_bytes,
    write_image,
)

from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.storage import open_storage
from genievm_core.testing.cli import error_lines

Cli = Callable[..., CLIResult]
OTHER = "the offsite passphrase"
ENV = {"GENIEVM_PASSPHRASE": PASSPHRASE, "GENIEVM_TO_PASSPHRASE": OTHER}


def ok(result: CLIResult) -> dict[str, object]:
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout) if result.stdout.startswith("{") else {}
    assert isinstance(data, dict)
    return data


def backup(cli: Cli, repo: Path, vm: str, image: Path, env: dict[str, str]) -> str:
    out = ok(cli("backup", "--vm", vm, "--repo", str(repo), "--disk", f"vda={image}", "--json", env=env))
    return str(out["backup_id"])


def restored(cli: Cli, repo: Path, vm: str, backup_id: str, target: Path, passphrase: str | None) -> bytes:
    env = {"GENIEVM_PASSPHRASE": passphrase} if passphrase else {}
    ok(cli("restore", "--repo", str(repo), "--vm", vm, "--backup", backup_id, "--target", str(target), env=env))
    return (target / "vda.img").read_bytes()


def test_a_copy_between_different_keys_is_encrypted_anew_verifies_and_restores(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    image = write_image(tmp_path / "a.img", 8 * CHUNK, [(0, random_bytes(5 * CHUNK, 1))])
    first_image = image.read_bytes()
    ok(cli("repo", "init", str(src), "--chunk-size", str(CHUNK), env=ENV))
    ok(cli("repo", "init", str(dst), "--chunk-size", str(CHUNK), env={"GENIEVM_PASSPHRASE": OTHER}))
    first = backup(cli, src, "web", image, ENV)
    patch_image(image, [(CHUNK, random_bytes(CHUNK, 2))])
    second = backup(cli, src, "web", image, ENV)

    stats = ok(cli("repo", "copy", str(src), str(dst), "--json", env=ENV))
    assert (stats["backups_copied"], stats["chunks_sent"], stats["chunks_present"]) == (2, 6, 0)
    assert {p.name for p in chunk_files(dst)}.isdisjoint(p.name for p in chunk_files(src))  # the target's ids
    assert len(chunk_files(dst)) == len(chunk_files(src)) == 6
    ok(cli("verify", "--repo", str(dst), "--read-data", env={"GENIEVM_PASSPHRASE": OTHER}))
    assert restored(cli, dst, "web", first, tmp_path / "r1", OTHER) == first_image
    assert restored(cli, dst, "web", second, tmp_path / "r2", OTHER) == image.read_bytes()

    # a third backup changes one chunk: its copy reads and sends that chunk only
    patch_image(image, [(3 * CHUNK, random_bytes(CHUNK, 3))])
    third = backup(cli, src, "web", image, ENV)
    again = ok(cli("repo", "copy", str(src), str(dst), "--json", env=ENV))
    assert (again["backups_copied"], again["backups_present"]) == (1, 2)
    assert (again["chunks_sent"], again["chunks_read"], again["chunks_present"]) == (1, 1, 4)  # 4 known, not read
    assert restored(cli, dst, "web", third, tmp_path / "r3", OTHER) == image.read_bytes()
    listed = cli("backups", "list", "--repo", str(dst), "--json", env={"GENIEVM_PASSPHRASE": OTHER})
    assert sorted(b["backup_id"] for b in json.loads(listed.stdout)) == sorted([first, second, third])


def test_unencrypted_repositories_share_chunk_ids_and_send_only_what_dst_lacks(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    shared = random_bytes(3 * CHUNK, 4)
    web = write_image(tmp_path / "web.img", 4 * CHUNK, [(0, shared)])
    db = write_image(tmp_path / "db.img", 4 * CHUNK, [(0, shared), (3 * CHUNK, random_bytes(CHUNK, 5))])
    for repo in (src, dst):
        ok(cli("repo", "init", str(repo), "--chunk-size", str(CHUNK), "--encryption", "none"))
    backup(cli, src, "web", web, {})
    db_backup = backup(cli, src, "db", db, {})

    only_web = ok(cli("repo", "copy", str(src), str(dst), "--vm", "web", "--json"))
    assert (only_web["backups_copied"], only_web["chunks_sent"]) == (1, 3)
    rest = ok(cli("repo", "copy", str(src), str(dst), "--backup", db_backup, "--json"))
    # db's three chunks shared with web are found at DST without being read from SRC
    assert (rest["backups_copied"], rest["chunks_sent"], rest["chunks_present"], rest["chunks_read"]) == (1, 1, 3, 1)
    assert sorted(p.name for p in chunk_files(dst)) == sorted(p.name for p in chunk_files(src))
    ok(cli("verify", "--repo", str(dst), "--read-data"))
    assert restored(cli, dst, "db", db_backup, tmp_path / "r", None) == db.read_bytes()


def test_what_cannot_be_copied_is_one_line(cli: Cli, tmp_path: Path) -> None:
    src, dst, small = tmp_path / "src", tmp_path / "dst", tmp_path / "small"
    ok(cli("repo", "init", str(src), "--chunk-size", str(CHUNK), "--encryption", "none"))
    ok(cli("repo", "init", str(dst), "--chunk-size", str(CHUNK), "--encryption", "none"))
    ok(cli("repo", "init", str(small), "--chunk-size", "4096", "--encryption", "none"))
    backup(cli, src, "web", write_image(tmp_path / "a.img", CHUNK, [(0, random_bytes(100, 6))]), {})

    unknown = cli("repo", "copy", str(src), str(dst), "--vm", "nope")
    assert unknown.code == 20
    assert unknown.err_lines == [f"genievm: error: no backup of VM nope in repository {src.as_uri()}"]
    sizes = cli("repo", "copy", str(src), str(small))
    assert (sizes.code, sizes.err_lines) == (3, [
        f"genievm: error: invalid configuration: repo copy: {src.as_uri()} has chunks of {CHUNK} bytes and "
        f"{small.as_uri()} of 4096: create the target with --chunk-size {CHUNK}"
    ])  # fmt: skip
    itself = cli("repo", "copy", str(src), str(src))
    assert itself.code == 3 and "are one repository" in itself.err_lines[0]
    absent = cli("repo", "copy", str(src), str(tmp_path / "nothing"))
    assert absent.code == 14
    assert chunk_files(dst) == [] and chunk_files(small) == []


def test_an_interrupted_copy_commits_nothing_and_its_rerun_sends_nothing_twice(
    cli: Cli, tmp_path: Path, host: PluginHost
) -> None:
    """SIGTERM mid-copy (held back by --limit-write): one line, exit 130, no backup in DST; the rerun keeps
    every chunk file the first run wrote (same inode, same time) and sends only the others."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    image = write_image(tmp_path / "a.img", 32 * CHUNK, [(0, random_bytes(32 * CHUNK, 8))])
    backup_vm(host, Repository.init(open_storage(host, str(src)), passphrase=None, chunk_size=CHUNK), "web",
              {"vda": image})  # fmt: skip
    Repository.init(open_storage(host, str(dst)), passphrase=None, chunk_size=CHUNK)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_") or k == "GENIEVM_JOB_DB"}
    first = subprocess.Popen([genievm_path(), "repo", "copy", str(src), str(dst), "--limit-write", "0.2"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        while len(chunk_files(dst)) < 2:  # 32 chunks at 0.2 MB/s: 10 s at the least
            assert first.poll() is None, first.communicate()
        first.send_signal(signal.SIGTERM)
        _out, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert (first.returncode, error_lines(err)) == (130, ["genievm: error: interrupted by SIGTERM"])
    assert not (dst / "manifests").exists() or not list((dst / "manifests").iterdir())
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in chunk_files(dst)}
    assert 2 <= len(kept) < 32

    stats = ok(cli("repo", "copy", str(src), str(dst), "--json"))
    assert (stats["backups_copied"], stats["chunks_present"], stats["chunks_sent"]) == (1, len(kept), 32 - len(kept))
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == kept
