"""``genievm files ls|find|get`` as a user runs them: the real console script, an encrypted repository, a backup
(image provider) of a disk with an MBR table and an ext4 partition; each command boots its own appliance.

docs/user-guide.md ("File restore") shows these commands as they stand here; the last test checks it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from genievm_recovery import ExportError, GuestFilesError  # noqa: E402
from guest_disks import WHEN, MiB, compare_trees, ext4, mbr_disk, source_tree  # noqa: E402
from serve_support import GENIEVM, PASSPHRASE, genievm, random_bytes  # noqa: E402

from genievm_core import errors  # noqa: E402

GUIDE = (Path(__file__).parents[3] / "docs" / "user-guide.md").read_text()
LS = "genievm files ls --repo repo --vm web01 /srv"
LS_JSON = "genievm files ls --repo repo --vm web01 /home --json"
FIND = "genievm files find --repo repo --vm web01 '*.txt'"
GET = "genievm files get --repo repo --vm web01 /etc/hosts /home --to restored"


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = shlex.split(command)
    assert args[0] == "genievm"
    return genievm(*args[1:], cwd=cwd, passphrase=PASSPHRASE)


@pytest.fixture(scope="module")
def backup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder holding ``repo``, with one backup of web01 (vda: MBR, partition 1 ext4 of ``source``)."""
    work = tmp_path_factory.mktemp("files-cli")
    source = source_tree(work / "source")
    vda = mbr_disk(work / "vda.img", 64 * MiB, [(ext4(work / "p1.img", 48 * MiB, source), "83")])
    assert genievm("repo", "init", "repo", cwd=work, passphrase=PASSPHRASE).returncode == 0
    done = genievm("backup", "--vm", "web01", "--repo", "repo", "--disk", f"vda={vda}", cwd=work, passphrase=PASSPHRASE)
    assert done.returncode == 0, done.stderr
    yield work


@pytest.fixture(autouse=True)
def _registry_beside_the_repository(backup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIEVM_JOB_DB", str(backup / "state" / "jobs.sqlite"))


@pytest.mark.slow
def test_ls_lists_a_folder_of_the_guest(backup: Path) -> None:
    done = run(LS, backup)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0] == ["mode", "size", "modified", "name"]
    assert [(r[0], r[1], r[-1]) for r in rows[1:]] == [("drwxr-xr-x", "1024", "data"), ("-rwxr-x---", "21", "run.sh")]
    assert rows[2][2:4] == [*_utc((backup / "source/srv/run.sh").stat().st_mtime).split()]


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.slow
def test_ls_json_gives_name_type_size_mode_and_mtime(backup: Path) -> None:
    done = run(LS_JSON, backup)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert (listed["path"], listed["filesystem"], listed["entries"][0]["name"]) == ("/home", "/dev/sda1", "caf\u00e9")
    by_name = {e["name"]: e for e in listed["entries"]}
    assert by_name["caf\u00e9"]["type"] == "directory" and by_name["caf\u00e9"]["mode"] == "0700"
    notes = by_name["notes with spaces.txt"]
    assert (notes["type"], notes["size"], notes["mode"], notes["link"]) == ("file", 23, "0644", None)
    mtime = (backup / "source/home/notes with spaces.txt").stat().st_mtime
    assert notes["mtime"] == _iso(mtime) and int(mtime) > WHEN


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).isoformat()


@pytest.mark.slow
def test_find_prints_the_matching_paths(backup: Path) -> None:
    done = run(FIND, backup)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["/home/caf\u00e9/r\u00e9sum\u00e9 \u00fcn\u00efc\u00f8de.txt",
                                        "/home/notes with spaces.txt"]  # fmt: skip


@pytest.mark.slow
def test_get_restores_files_and_folders_with_modes_and_times(backup: Path) -> None:
    done = run(GET, backup)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "restored 3 files, 2 folders, 0 links (71 B) to restored"
    restored = backup / "restored"
    assert sorted(p.name for p in restored.iterdir()) == ["home", "hosts"]
    assert compare_trees(backup / "source/home", restored / "home") == []
    hosts, copy = (backup / "source/etc/hosts").stat(), (restored / "hosts").stat()
    assert (restored / "hosts").read_bytes() == (backup / "source/etc/hosts").read_bytes()
    assert (copy.st_mode, copy.st_mtime_ns) == (hosts.st_mode, hosts.st_mtime_ns)  # one file: to the nanosecond
    job = json.loads(genievm("jobs", "list", "--json", cwd=backup).stdout)[0]
    assert (job["kind"], job["state"], job["phase"]) == ("files", "succeeded", "get")
    assert not (backup / "state" / "exports").exists() or list((backup / "state" / "exports").iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("disk", "message"),
    [
        ("vda", "no filesystem libguestfs can read on vda (found: /dev/sda unknown)"),
        ("vdb", "/dev/sda is encrypted (LUKS): genievm files cannot read it"),
    ],
    ids=["no-filesystem", "encrypted"],
)
def test_a_disk_without_a_readable_filesystem_is_one_line_and_exit_32(tmp_path: Path, disk: str, message: str) -> None:
    (tmp_path / "vda.img").write_bytes(random_bytes(4 * MiB, 3))
    luks = tmp_path / "vdb.img"
    luks.write_bytes(bytes(32 * MiB))
    fast = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
    subprocess.run(["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", *fast, "--key-file=-", str(luks)],
                   input=b"secret", check=True)  # fmt: skip
    assert genievm("repo", "init", "repo", "--encryption", "none", cwd=tmp_path).returncode == 0
    disks = ["--disk", f"vda={tmp_path / 'vda.img'}", "--disk", f"vdb={luks}"]
    assert genievm("backup", "--vm", "web01", "--repo", "repo", *disks, cwd=tmp_path).returncode == 0
    done = genievm("files", "ls", "--repo", "repo", "--vm", "web01", "--disk", disk, "/", cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line and not line.startswith("genievm: warning: ")]
    assert done.returncode == GuestFilesError.exit_code == 32, done.stderr
    assert len(lines) == 1 and lines[0].startswith("genievm: error: backup ") and lines[0].endswith(message), lines


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ls", "/"], 3, "genievm: error: invalid configuration: --vm: give the VM whose backup is read"),
        (["ls", "--vm", "web01", "--disk", "vdz", "/"], 20, "genievm: error: backup "),
        (["ls", "--vm", "db02", "/"], 20, "genievm: error: no backup of VM db02 in repository file://"),
        (
            ["get", "--vm", "web01", "/etc/hosts", "--to", "repo/config"],
            3,
            "genievm: error: invalid configuration: --to",
        ),
    ],
    ids=["no-vm", "unknown-disk", "unknown-vm", "to-a-file"],
)
def test_bad_options_are_one_line_before_any_appliance(backup: Path, args: list[str], code: int, message: str) -> None:
    done = genievm("files", *args[:1], "--repo", "repo", *args[1:], cwd=backup, passphrase=PASSPHRASE)
    lines = [line for line in done.stderr.splitlines() if line]
    assert done.returncode == code and len(lines) == 1 and lines[0].startswith(message), done.stderr


def test_the_user_guide_shows_the_commands_of_these_tests() -> None:
    section = GUIDE.split("## File restore: genievm files", 1)[1].split("\n## ", 1)[0]
    shown = [line.strip() for line in section.splitlines() if line.startswith("    genievm files ")]
    assert shown == [LS, LS_JSON, FIND, GET]


def test_files_comes_through_the_commands_entry_point_group() -> None:
    helped = subprocess.run([GENIEVM, "files", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and all(f" {name} " in helped.stdout for name in ("ls", "find", "get"))


def test_a_wrong_passphrase_is_exit_17_before_any_appliance(backup: Path) -> None:
    done = genievm("files", "ls", "--repo", "repo", "--vm", "web01", "/", cwd=backup, passphrase="not it")
    lines = [line for line in done.stderr.splitlines() if line]
    assert done.returncode == 17 and lines == [f"genievm: error: wrong passphrase for repository {_url(backup)}"]


def _url(folder: Path) -> str:
    return (folder / "repo").absolute().as_uri()


def test_guest_files_error_is_documented_with_its_own_exit_code() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "errors.md").read_text()
    assert re.search(r"^\| 32 \| `GuestFilesError` \|", doc, re.M)
    core = [c.exit_code for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.GenieVMError)]
    assert GuestFilesError.exit_code not in core and GuestFilesError.exit_code != ExportError.exit_code


@pytest.mark.slow
def test_on_a_terminal_each_phase_is_told_as_it_starts(backup: Path) -> None:
    """Under a pseudo-terminal (util-linux ``script``), as a user sees it: the phases, then the result."""
    command = shlex.join([GENIEVM, "files", "get", "--repo", "repo", "--vm", "web01", "/srv/data", "--to", "tty"])
    env = {**os.environ, "GENIEVM_PASSPHRASE": PASSPHRASE, "TERM": "xterm"}
    done = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=backup, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stdout)  # rich's cursor and colour codes
    told = [line.strip() for line in re.split(r"[\r\n]+", screen) if line.strip().startswith("genievm: ")]
    assert told[:4] == [
        "genievm: serving the backup's disks",
        "genievm: starting the libguestfs appliance (KVM, else TCG)",
        "genievm: finding and mounting the filesystem",
        "genievm: extracting",
    ]
    assert "restored 2 files, 1 folder, 0 links (1.5 MiB) to tty" in screen
    assert (backup / "tty/data/random.bin").read_bytes() == (backup / "source/srv/data/random.bin").read_bytes()


@pytest.mark.slow
def test_a_killed_files_command_leaves_nothing_after_cleanup(backup: Path) -> None:
    """Killed while the appliance boots: nbdkit and QEMU follow it, the next command removes its export folder."""
    env = {**os.environ, "GENIEVM_PASSPHRASE": PASSPHRASE}
    process = subprocess.Popen([GENIEVM, "files", "ls", "--repo", "repo", "--vm", "web01", "/"], cwd=backup, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    exports = backup / "state" / "exports"
    deadline = time.monotonic() + 60
    while not list(exports.glob("*/nbdkit.pid")) and time.monotonic() < deadline:
        time.sleep(0.1)
    [folder] = [p.parent for p in exports.glob("*/nbdkit.pid")]
    time.sleep(3)  # into the appliance's launch
    assert _holding(folder), "nbdkit serves from the export's folder"
    process.kill()
    process.wait(10)
    deadline = time.monotonic() + 30
    while _holding(folder) and time.monotonic() < deadline:  # libguestfs's recovery process stops QEMU
        time.sleep(0.5)
    assert _holding(folder) == []
    cleaned = genievm("serve", "--cleanup", cwd=backup)
    assert cleaned.returncode == 0 and cleaned.stdout.strip() == "removed 1 stale exports"
    assert not folder.exists()
    job = json.loads(genievm("jobs", "show", folder.name, "--json", cwd=backup).stdout)
    assert (job["kind"], job["state"]) == ("files", "failed") and "interrupted" in job["error"]


def _holding(folder: Path) -> list[int]:
    """The processes whose command line names ``folder`` (nbdkit's socket is in it; QEMU's drive names it)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if str(folder).encode() in cmdline and state not in ("Z", "X"):
            found.append(int(proc.name))
    return found
