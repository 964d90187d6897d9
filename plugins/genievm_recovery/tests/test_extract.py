"""The target tree of ``genievm files get``: nothing is ever written outside it, whatever names and links come.

These tars are made here by hand (no appliance): ``tar_out`` of a real guest
never holds ``..`` names, but the writer must not trust that.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from genievm_recovery.extract import TargetTree, UnsafePathError, parts_of


def tar_of(*members: tuple[str, str, bytes | str]) -> io.BytesIO:
    """A tar of (name, kind, data or link text), kind one of file, dir, symlink, hardlink."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            info.mode = 0o640
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o751
                tar.addfile(info)
            elif kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(data)
                tar.addfile(info)
            else:
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def everything_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "a/../../evil", "a/b/../../../evil", "x\0y"])
def test_a_name_that_could_leave_the_target_is_refused(name: str) -> None:
    with pytest.raises(UnsafePathError):
        parts_of(name)


def test_a_tar_member_climbing_out_is_refused_and_nothing_lands_outside(tmp_path: Path) -> None:
    tree = TargetTree(tmp_path / "to")
    with pytest.raises(UnsafePathError, match="contains '..'"):
        tree.extract_tar(tar_of(("./ok.txt", "file", b"fine"), ("./../evil.txt", "file", b"bad")), "")
    assert everything_under(tmp_path) == ["to", "to/ok.txt"]


def test_a_link_is_restored_as_a_link_and_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = TargetTree(tmp_path / "to")
    stream = tar_of(("./lnk", "symlink", str(outside)), ("./lnk/planted.txt", "file", b"bad"))
    with pytest.raises(UnsafePathError, match="lnk is in the way"):
        tree.extract_tar(stream, "")
    assert os.readlink(tmp_path / "to" / "lnk") == str(outside)
    assert list(outside.iterdir()) == []


def test_a_link_already_in_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    (tmp_path / "to").mkdir()
    (tmp_path / "to" / "hosts").symlink_to(outside)
    tree = TargetTree(tmp_path / "to")
    tree.file("hosts", lambda fd: os.write(fd, b"new"), 0o644, 0, 1_600_000_000 * 10**9)
    assert outside.read_bytes() == b"precious"
    assert not (tmp_path / "to" / "hosts").is_symlink() and (tmp_path / "to" / "hosts").read_bytes() == b"new"


def test_modes_times_folders_and_hard_links_are_kept(tmp_path: Path) -> None:
    tree = TargetTree(tmp_path / "to")
    stream = tar_of(
        ("./etc", "dir", b""), ("./etc/a.conf", "file", b"x=1\n"), ("./etc/b.conf", "hardlink", "./etc/a.conf")
    )
    tree.extract_tar(stream, "saved")
    tree.finish()
    folder, a, b = (tmp_path / "to/saved/etc"), (tmp_path / "to/saved/etc/a.conf"), (tmp_path / "to/saved/etc/b.conf")
    assert (folder.stat().st_mode & 0o7777, int(folder.stat().st_mtime)) == (0o751, 1_600_000_000)
    assert (a.stat().st_mode & 0o7777, int(a.stat().st_mtime), a.read_bytes()) == (0o640, 1_600_000_000, b"x=1\n")
    assert b.stat().st_ino == a.stat().st_ino
    assert (tree.files, tree.folders, tree.written) == (2, 1, 4)


def test_setuid_and_setgid_are_dropped(tmp_path: Path) -> None:
    tree = TargetTree(tmp_path / "to")
    tree.file("su", lambda fd: 0, 0o6755, 0, 0)
    assert (tmp_path / "to/su").stat().st_mode & 0o7777 == 0o755
