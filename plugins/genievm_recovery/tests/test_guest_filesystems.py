"""File restore from every kind of guest disk: MBR and GPT, LVM, ext4, FAT, XFS and btrfs.

One backup (image provider, encrypted) of a VM with two real disks, made
without mounting anything on the host (guest_disks.py); one ``genievm serve``
of it and one libguestfs appliance over that export for the whole module
(launching takes tens of seconds under TCG). Every file is compared with the
original byte for byte, with its mode and modification time.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from genievm_recovery import GuestFilesError  # noqa: E402
from genievm_recovery.extract import TargetTree  # noqa: E402
from genievm_recovery.guest_files import GuestFiles  # noqa: E402
from guest_disks import MiB, compare_trees, escape_links, ext4, gpt_lvm_disk, mbr_disk, source_tree, vfat  # noqa: E402
from serve_support import PASSPHRASE, genievm, serving  # noqa: E402

pytestmark = pytest.mark.slow
FILESYSTEMS = {"/dev/sda1": "ext4", "/dev/sda2": "vfat", "/dev/guestvg/data": "xfs", "/dev/sdb2": "btrfs"}


@dataclass
class Guest:
    files: GuestFiles
    source: Path  # what ext4, XFS and btrfs hold
    fat_source: Path  # what the FAT partition holds
    outside: Path  # where the guest's links point: must stay empty


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    work = tmp_path_factory.mktemp("guest")
    (work / "state").mkdir()
    outside = work / "outside"
    outside.mkdir()
    source = source_tree(work / "source")
    (source / "srv/absolute").mkdir()  # a folder of the same name as a link in escape/
    (source / "srv/absolute/file.txt").write_bytes(b"in a folder\n")
    escape_links(source, outside)
    fat_source = source_tree(work / "fat-source")
    partitions = [(ext4(work / "p1.img", 40 * MiB, source), "83"), (vfat(work / "p2.img", 40 * MiB, fat_source), "c")]
    vda = mbr_disk(work / "vda.img", 96 * MiB, partitions)
    vdb = gpt_lvm_disk(work / "vdb.img", 640 * MiB, source)
    env = pytest.MonkeyPatch()
    env.setenv("GENIEVM_JOB_DB", str(work / "state" / "jobs.sqlite"))
    try:
        assert genievm("repo", "init", "repo", cwd=work, passphrase=PASSPHRASE).returncode == 0
        args = ["--disk", f"vda={vda}", "--disk", f"vdb={vdb}"]
        done = genievm("backup", "--vm", "web01", "--repo", "repo", *args, cwd=work, passphrase=PASSPHRASE)
        assert done.returncode == 0, done.stderr
        with serving("--repo", "repo", "--vm", "web01", "--socket", "web01.sock", cwd=work, passphrase=PASSPHRASE,
                     disks=2) as served:  # fmt: skip
            files = GuestFiles(served.lines[0].split()[4], work / "web01.sock", ["vda", "vdb"])
            files.launch()
            try:
                yield Guest(files, source, fat_source, outside)
            finally:
                files.close()
    finally:
        env.undo()


def test_every_partition_and_logical_volume_is_found(guest: Guest) -> None:
    assert guest.files.filesystems() == FILESYSTEMS


@pytest.mark.parametrize("device", ["/dev/sda1", "/dev/guestvg/data", "/dev/sdb2"], ids=["ext4", "xfs", "btrfs"])
def test_a_whole_filesystem_comes_back_byte_for_byte(guest: Guest, device: str, tmp_path: Path) -> None:
    assert guest.files.mount(device) == device
    tree = TargetTree(tmp_path / "restored")
    guest.files.get(["/"], tree)
    shutil.rmtree(tmp_path / "restored" / "lost+found", ignore_errors=True)  # ext4's own
    assert compare_trees(guest.source, tmp_path / "restored") == []
    assert tree.links == 3 and list(guest.outside.iterdir()) == []


def test_fat_names_and_bytes_come_back(guest: Guest, tmp_path: Path) -> None:
    guest.files.mount("/dev/sda2")
    guest.files.get(["/home", "/srv/data/random.bin"], TargetTree(tmp_path / "restored"))
    copy = tmp_path / "restored"
    assert compare_trees(guest.fat_source / "home", copy / "home", modes=False, times=False) == []
    assert (copy / "random.bin").read_bytes() == (guest.fat_source / "srv/data/random.bin").read_bytes()


def test_ls_shows_name_type_size_mode_and_time(guest: Guest) -> None:
    guest.files.mount("/dev/guestvg/data")
    entries = {e.name: e for e in guest.files.ls("/srv")}
    assert sorted(entries) == ["absolute", "data", "run.sh"]
    run = entries["run.sh"]
    assert (run.type, run.size, run.mode) == ("file", 21, 0o750)
    assert run.mtime.timestamp() == int((guest.source / "srv/run.sh").stat().st_mtime)
    assert entries["data"].type == "directory" and entries["data"].as_json()["mode"] == "0755"
    [link] = guest.files.ls("/escape/passwd")
    assert (link.type, link.link) == ("symlink", "/etc/passwd")


def test_find_matches_names_with_spaces_and_unicode(guest: Guest) -> None:
    guest.files.mount("/dev/sdb2")
    assert guest.files.find("*.txt") == [
        "/home/caf\u00e9/r\u00e9sum\u00e9 \u00fcn\u00efc\u00f8de.txt",
        "/home/notes with spaces.txt",
        "/srv/absolute/file.txt",
    ]
    assert guest.files.find("*.conf", "/etc") == ["/etc/app.conf"]


def test_a_link_in_the_target_is_never_written_through(guest: Guest, tmp_path: Path) -> None:
    """/escape/absolute (a link to a host folder) first, then the folder /srv/absolute under the same name."""
    guest.files.mount("/dev/sda1")
    tree = TargetTree(tmp_path / "restored")
    with pytest.raises(GuestFilesError, match="/srv/absolute: not written: .*absolute is in the way"):
        guest.files.get(["/escape/absolute", "/srv/absolute"], tree)
    assert (tmp_path / "restored" / "absolute").readlink() == guest.outside
    assert list(guest.outside.iterdir()) == []


def test_paths_climbing_above_the_guest_root_stay_in_the_guest(guest: Guest, tmp_path: Path) -> None:
    guest.files.mount("/dev/sda1")
    guest.files.get(["../../etc/../etc/hosts"], TargetTree(tmp_path / "restored"))
    assert [p.name for p in (tmp_path / "restored").iterdir()] == ["hosts"]
    assert (tmp_path / "restored/hosts").read_bytes() == (guest.source / "etc/hosts").read_bytes()


def test_several_filesystems_no_os_and_unknown_paths_are_one_clear_error(guest: Guest) -> None:
    with pytest.raises(GuestFilesError, match="several filesystems and no single OS: choose one with --filesystem"):
        guest.files.mount()
    with pytest.raises(GuestFilesError, match=r"no filesystem /dev/sdz9 to read \(found: /dev/guestvg/data xfs, "):
        guest.files.mount("/dev/sdz9")
    guest.files.mount("/dev/sda1")
    with pytest.raises(GuestFilesError, match="/nothing/here: no such file or directory in /dev/sda1"):
        guest.files.ls("/nothing/here")
