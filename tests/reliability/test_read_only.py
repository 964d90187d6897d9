"""Reading a repository on storage that refuses writes: a read-only bind mount, as a snapshot or a backup
disk mounted read-only is (the kernel says EROFS, even to root).

``backups list`` takes no lock; ``verify`` and ``restore`` take a shared one, or, when the storage refuses
its put or ``--no-lock`` is given, none after a warning. S3 credentials that can only read: the S3
plugin's tests/test_s3_cli.py.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

from support import CHUNK, CLIResult, random_bytes, write_image

from genievm_core.repository.lock import PREFIX as LOCKS
from genievm_core.testing import read_only_view

Cli = Callable[..., CLIResult]


def backed_up(tmp_path: Path, cli: Cli) -> tuple[Path, Path, str]:
    """A repository holding one backup of vm1; its folder, the disk image and the backup id."""
    image = write_image(tmp_path / "vda.img", 6 * CHUNK, [(CHUNK, random_bytes(3 * CHUNK, 7))])
    repo = tmp_path / "repo"
    assert cli("repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)).code == 0
    result = cli("backup", "--vm", "vm1", "--repo", str(repo), "--disk", f"vda={image}", "--json")
    assert result.code == 0, result.stderr
    return repo, image, json.loads(result.stdout)["backup_id"]


def files(root: Path) -> list[tuple[str, bytes]]:
    return sorted((str(p.relative_to(root)), p.read_bytes()) for p in root.rglob("*") if p.is_file())


def warned(result: CLIResult, reason: str) -> bool:
    return "lock.skipped" in result.stderr and reason in result.stderr


def test_list_verify_and_restore_from_a_read_only_mount(tmp_path: Path, cli: Cli) -> None:
    repo, image, backup_id = backed_up(tmp_path, cli)
    before = files(repo)
    with read_only_view(repo, tmp_path / "ro") as ro:
        listed = cli("backups", "list", "--repo", str(ro), "--json")
        assert listed.code == 0, listed.stderr
        assert [b["backup_id"] for b in json.loads(listed.stdout)] == [backup_id]

        verify = cli("verify", "--repo", str(ro), "--read-data")
        assert verify.code == 0, verify.stderr
        assert warned(verify, f"the storage refuses writes (storage file://{ro}: permission denied on {ro}/locks")

        restore = cli("restore", "--vm", "vm1", "--repo", str(ro), "--target", str(tmp_path / "out"))
        assert restore.code == 0, restore.stderr
        assert warned(restore, "the storage refuses writes")
        assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()

        backup = cli("backup", "--vm", "vm1", "--repo", str(ro), "--disk", f"vda={image}")
        assert backup.code == 11, "a backup writes: it is refused, never run without its lock"
        assert backup.err_lines == [f"genievm: error: storage file://{ro}: permission denied on {ro}/locks"]
    assert files(repo) == before


def test_no_lock_reads_beside_an_exclusive_lock_that_would_block_them(tmp_path: Path, cli: Cli) -> None:
    repo, image, _ = backed_up(tmp_path, cli)
    holder = {"kind": "exclusive", "operation": "prune", "host": socket.gethostname(), "pid": os.getpid()}
    (repo / LOCKS).mkdir(exist_ok=True)
    (repo / LOCKS / "held").write_text(json.dumps(holder | {"created_at": "2026-12-06T12:00:00+00:00"}))

    locked = cli("verify", "--repo", str(repo))
    assert locked.code == 19, "a lock that is there is respected: only a refused write means no lock"

    verify = cli("verify", "--repo", str(repo), "--no-lock")
    assert verify.code == 0, verify.stderr
    assert warned(verify, "reason=--no-lock")
    restore = cli("restore", "--vm", "vm1", "--repo", str(repo), "--target", str(tmp_path / "out"), "--no-lock")
    assert restore.code == 0, restore.stderr
    assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()
    assert sorted(p.name for p in (repo / LOCKS).iterdir()) == ["held"], "--no-lock put no lock of its own"
