"""``genievm instant`` and ``genievm restore --instant``: real libvirtd, QEMU, nbdkit and repositories.

Each case backs up a KVM VM, deletes it and its disks, boots the backup as a new VM on qcow2
overlays over the backup's NBD export, writes into it as the guest would (HMP qemu-io), moves it to
its own disks while it runs, and compares them bit for bit with what the disks should hold.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

libvirt = pytest.importorskip("libvirt")
sys.path.insert(0, str(Path(__file__).parent))

from genievm_recovery.errors import InstantBootError  # noqa: E402
from instant_support import (  # noqa: E402
    URI,
    BackedUp,
    MiB,
    back_up_and_delete,
    disk_source,
    lookup,
    remove_named,
    same_content,
)
from serve_support import GENIEVM, PASSPHRASE, genievm  # noqa: E402

from genievm_core.cli import app, extra  # noqa: E402
from genievm_core.errors import ConfigError  # noqa: E402
from genievm_core.processes import process_alive  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
GUIDE = (ROOT / "docs" / "user-guide.md").read_text()
# the commands of docs/user-guide.md, "Instant boot" (ID: the id that start prints), run in the folder of repo/
START = "genievm instant start --repo repo --vm web01 --new-name web01-instant"
LIST = "genievm instant list"
FINISH = "genievm instant finish ID --migrate-to final"
ABORT = "genievm instant abort ID"
RESTORE = "genievm restore --instant --repo repo --vm web01 --new-name web01-instant"


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    if shutil.which("libvirtd") is None:
        pytest.skip("libvirtd is not installed (scripts/setup.sh installs it)")
    if os.geteuid() != 0:
        pytest.skip("instant boot starts VMs through qemu:///system, which needs root here")
    subprocess.run(["bash", str(ROOT / "scripts/services/libvirtd.sh")], check=True)
    connection = libvirt.open(URI)
    yield connection
    connection.close()


@pytest.fixture
def backed_up(conn: libvirt.virConnect, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BackedUp]:
    name = getattr(request, "param", f"genievm-test-{secrets.token_hex(3)}")
    remove_named(conn, name, f"{name}-instant")  # left by a run killed outright
    made = back_up_and_delete(conn, tmp_path, name)
    yield made
    for listed in json.loads(run("instant", "list", "--json", cwd=tmp_path).stdout or "[]"):
        run("instant", "abort", listed["instant"], cwd=tmp_path)
    remove_named(conn, *(d.name() for d in conn.listAllDomains() if d.name().startswith(name)))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return genievm(*args, cwd=cwd, passphrase=PASSPHRASE)


def start(b: BackedUp, new_name: str, *extra: str) -> dict[str, object]:
    started = run("instant", "start", "--repo", "repo", "--vm", b.name, "--new-name", new_name, "--json", *extra,
                  cwd=b.folder)  # fmt: skip
    assert started.returncode == 0, started.stderr
    return dict(json.loads(started.stdout))


def job_state(folder: Path, job: str) -> str:
    return str(json.loads(run("jobs", "show", job, "--json", cwd=folder).stdout)["state"])


def instant_folders(folder: Path) -> list[Path]:
    root = folder / "state" / "instant"
    return sorted(root.iterdir()) if root.exists() else []


def assert_moved(conn: libvirt.virConnect, b: BackedUp, new_name: str, final: Path) -> None:
    dom = conn.lookupByName(new_name)
    assert dom.isActive() and dom.isPersistent()
    for disk, expected in b.expected.items():
        target = final / f"{new_name}-{disk}.qcow2"
        assert disk_source(dom, disk) == str(target)
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(target)], check=True,
                                         capture_output=True, text=True).stdout)  # fmt: skip
        assert "backing-filename" not in info and info["format"] == "qcow2"
        assert same_content(expected, target), disk
    inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert str(final / f"{new_name}-vda.qcow2") in inactive and "error_policy" not in inactive


def guide_command(line: str, instance: object = "ID") -> list[str]:
    assert f"    {line}\n" in GUIDE, f"docs/user-guide.md does not show {line!r}"
    return [arg.replace("ID", str(instance)) for arg in shlex.split(line)[1:]]


@pytest.mark.slow
@pytest.mark.parametrize("backed_up", ["web01"], indirect=True)
def test_boot_write_migrate_and_compare_bit_for_bit(conn: libvirt.virConnect, backed_up: BackedUp) -> None:
    b, new_name = backed_up, "web01-instant"
    began = time.monotonic()
    done = run(*guide_command(START), "--json", cwd=b.folder)
    assert done.returncode == 0, done.stderr
    started = json.loads(done.stdout)
    assert time.monotonic() - began < 15
    dom = conn.lookupByName(new_name)
    assert dom.isActive() and not dom.isPersistent() and dom.UUIDString() == started["uuid"]
    assert disk_source(dom, "vda") == started["disks"]["vda"]["overlay"]  # type: ignore[index]
    assert dom.XMLDesc(0).count("error_policy='stop' rerror_policy='stop'") == 2  # a dead export pauses the VM
    assert lookup(conn, b.name) is None  # the original is gone; the new name never collides with it
    b.write(dom, "vda", 0x5A, 3 * MiB, 256 << 10)  # over backed-up random data
    b.write(dom, "vdb", 0xA5, 30 * MiB, 64 << 10)  # into a hole
    listed = json.loads(run("jobs", "list", "--json", cwd=b.folder).stdout)
    assert [(j["id"], j["kind"], j["state"]) for j in listed if j["kind"] == "instant"] == [
        (started["export_job"], "instant", "running")
    ]
    shown = run(*guide_command(LIST), cwd=b.folder).stdout.split()
    assert shown == [str(started["instant"]), new_name, str(started["backup"]), "running", "serving"]
    final = b.folder / "final"
    finished = run(*guide_command(FINISH, started["instant"]), cwd=b.folder)
    assert finished.returncode == 0, finished.stderr
    assert "vda: 64.0 MiB of 64.0 MiB copied (100%)" in finished.stderr  # progress on stderr
    first = finished.stdout.splitlines()[0]
    assert first == f"instant {started['instant']}: VM {new_name} runs on its own disks, export stopped"
    assert_moved(conn, b, new_name, final)
    b.write(dom, "vda", 0x77, 40 * MiB, 64 << 10)  # the VM goes on, on its new disks
    assert same_content(b.expected["vda"], final / f"{new_name}-vda.qcow2")
    assert job_state(b.folder, str(started["export_job"])) == "succeeded"
    assert instant_folders(b.folder) == []
    assert run("verify", "--repo", "repo", cwd=b.folder).returncode == 0
    again = run(*guide_command(START), cwd=b.folder)
    assert again.returncode == 23
    assert again.stderr == "genievm: error: VM web01-instant exists; give the instant VM another --new-name\n"


@pytest.mark.slow
def test_a_migration_to_a_full_disk_keeps_every_write_and_can_be_retried(
    conn: libvirt.virConnect, backed_up: BackedUp
) -> None:
    b, new_name = backed_up, f"{backed_up.name}-instant"
    small = b.folder / "small"  # mounted before the VM starts: QEMU runs in a mount namespace of its own
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "none", str(small)], check=True)
    try:
        started = start(b, new_name)
        dom = conn.lookupByName(new_name)
        b.write(dom, "vda", 0x5A, 5 * MiB, MiB)
        failed = run("instant", "finish", str(started["instant"]), "--migrate-to", str(small), cwd=b.folder)
        assert failed.returncode == InstantBootError.exit_code, failed.stderr
        line = failed.stderr.strip().splitlines()[-1]
        assert line.startswith(f"genievm: error: instant {started['instant']}: the copy of vda to {small}/")
        assert f"failed (no space left on {small});" in line and "its writes kept" in line
        assert list(small.iterdir()) == []  # the partial copy is gone
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert dom.isActive() and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    overlay = Path(str(started["disks"]["vda"]["overlay"]))  # type: ignore[index]
    assert same_content(b.expected["vda"], overlay)  # the write is there, over the export still serving
    final = b.folder / "final"
    retried = run("instant", "finish", str(started["instant"]), "--migrate-to", str(final), "--json", cwd=b.folder)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["migrated"] == {d: str(final / f"{new_name}-{d}.qcow2") for d in b.expected}
    assert_moved(conn, b, new_name, final)


@pytest.mark.slow
def test_when_the_export_dies_finish_serves_it_again_and_keeps_every_write(
    conn: libvirt.virConnect, backed_up: BackedUp
) -> None:
    b, new_name = backed_up, f"{backed_up.name}-instant"
    started = start(b, new_name)
    dom = conn.lookupByName(new_name)
    b.write(dom, "vda", 0x6B, 2 * MiB, MiB)
    b.write(dom, "vdb", 0x6C, 20 * MiB, MiB)
    folder = instant_folders(b.folder)[0]
    owner = json.loads((folder / "owner.json").read_text())
    nbdkit = int((folder / "export" / "nbdkit.pid").read_text())
    os.kill(owner["pid"], signal.SIGKILL)  # its nbdkit is told to exit, but lingers while QEMU is connected
    deadline = time.monotonic() + 30
    while process_alive(owner["pid"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert json.loads(run("instant", "list", "--json", cwd=b.folder).stdout)[0]["serving"] is False
    finished = run("instant", "finish", str(started["instant"]), "--migrate-to", "final", cwd=b.folder)
    assert finished.returncode == 0, finished.stderr
    assert f"instant {started['instant']}: its export is gone; serving the backup again" in finished.stderr
    assert_moved(conn, b, new_name, b.folder / "final")
    assert not process_alive(nbdkit)
    assert job_state(b.folder, owner["job"]) == "failed"  # the registry marks the killed export's job failed


@pytest.mark.slow
def test_kills_at_each_step_leave_the_repository_intact_and_are_cleaned_up(
    conn: libvirt.virConnect, backed_up: BackedUp
) -> None:
    b = backed_up
    env = {**os.environ, "GENIEVM_PASSPHRASE": PASSPHRASE}
    # killed while starting, once its export serves: the next command removes all of it
    starting = subprocess.Popen([GENIEVM, "instant", "start", "--repo", "repo", "--vm", b.name, "--new-name",
                                 f"{b.name}-killed"], cwd=b.folder, env=env)  # fmt: skip
    deadline = time.monotonic() + 60
    while not any((f / "owner.json").exists() for f in instant_folders(b.folder)):
        assert time.monotonic() < deadline and starting.poll() is None
        time.sleep(0.01)
    owner = json.loads((instant_folders(b.folder)[0] / "owner.json").read_text())
    starting.kill()
    starting.wait()
    assert json.loads(run("instant", "list", "--json", cwd=b.folder).stdout) == []
    assert instant_folders(b.folder) == [] and lookup(conn, f"{b.name}-killed") is None
    deadline = time.monotonic() + 30
    while process_alive(owner["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(owner["pid"])
    assert job_state(b.folder, owner["job"]) == "cancelled"
    # restore --instant --migrate-to: booted, then moved at once (before any guest write)
    moved_name = f"{b.name}-moved"
    moved = run("restore", "--instant", "--repo", "repo", "--vm", b.name, "--new-name", moved_name, "--migrate-to",
                "moved", "--json", cwd=b.folder)  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["migrated"] == {d: str(b.folder / "moved" / f"{moved_name}-{d}.qcow2")
                                                    for d in b.expected}  # fmt: skip
    assert_moved(conn, b, moved_name, b.folder / "moved")
    # killed while moving the disks: the VM runs on; finish again completes the move
    new_name = f"{b.name}-instant"
    started = run_restore_instant(b, new_name)
    dom = conn.lookupByName(new_name)
    b.write(dom, "vdb", 0x3C, 12 * MiB, MiB)
    finishing = subprocess.Popen([GENIEVM, "instant", "finish", str(started["instant"]), "--migrate-to", "final"],
                                 cwd=b.folder, env=env, stderr=subprocess.DEVNULL)  # fmt: skip
    while not (dom.blockJobInfo("vda", 0) or finishing.poll() is not None):
        time.sleep(0.005)
    finishing.kill()
    finishing.wait()
    assert dom.isActive()
    assert run("verify", "--repo", "repo", cwd=b.folder).returncode == 0
    again = run("instant", "finish", str(started["instant"]), cwd=b.folder)  # the folder it was given before
    assert again.returncode == 0, again.stderr
    assert_moved(conn, b, new_name, b.folder / "final")
    # abort: the VM and everything it made go; the repository stays as it was
    other = f"{b.name}-aborted"
    aborted_start = start(b, other)
    aborted = run(*guide_command(ABORT, aborted_start["instant"]), cwd=b.folder)
    assert aborted.returncode == 0, aborted.stderr
    assert lookup(conn, other) is None and instant_folders(b.folder) == []
    assert job_state(b.folder, str(aborted_start["export_job"])) == "cancelled"
    assert run("verify", "--repo", "repo", "--read-data", cwd=b.folder).returncode == 0


def run_restore_instant(b: BackedUp, new_name: str) -> dict[str, object]:
    """The same through the core's ``restore --instant``, which hands over to ``instant start``."""
    args = [arg.replace("web01", b.name) for arg in guide_command(RESTORE)]  # its VM, named at random
    done = run(*args, "--json", cwd=b.folder)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_restore_instant_without_genievm_recovery_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extra, "entry_points", lambda group: [])
    extra.plugin_commands.cache_clear()
    try:
        done = CliRunner().invoke(app, ["restore", "--instant", "--repo", "r", "--vm", "v", "--new-name", "n"])
    finally:
        extra.plugin_commands.cache_clear()
    assert isinstance(done.exception, ConfigError)
    assert str(done.exception) == (
        "invalid configuration: --instant: needs the distribution genievm-recovery, which is not installed"
    )
    no_instant = CliRunner().invoke(app, ["restore", "--migrate-to", "d", "--repo", "r", "--vm", "v"])
    assert str(no_instant.exception) == "invalid configuration: --migrate-to: needs --instant"


def test_bad_inputs_are_one_line(tmp_path: Path) -> None:
    from test_serve import backed_up as image_backup

    image_backup(tmp_path, encrypted=True)  # VM web01 of the image provider: no libvirt domain
    done = run("instant", "start", "--repo", "repo", "--vm", "web01", "--new-name", "x", cwd=tmp_path)
    assert done.returncode == InstantBootError.exit_code
    assert done.stderr.startswith("genievm: error: instant boot of ") and done.stderr.count("\n") == 1
    assert "not a KVM backup (its VM configuration is image-json)" in done.stderr
    unknown = genievm("instant", "finish", "nosuch", "--json", cwd=tmp_path)
    assert unknown.returncode == InstantBootError.exit_code
    assert unknown.stderr == "genievm: error: instant nosuch: no such instant VM (genievm instant list shows them)\n"
    assert json.loads(unknown.stdout)["error"]["code"] == "InstantBootError"
    remote = run("instant", "start", "--repo", "repo", "--vm", "web01", "--new-name", "x", "--uri",
                 "qemu+ssh://root@h/system", cwd=tmp_path)  # fmt: skip
    assert remote.returncode == ConfigError.exit_code
    assert remote.stderr.startswith("genievm: error: invalid configuration: --uri: qemu+ssh://root@h/system is not")
    mixed = run("restore", "--instant", "--repo", "repo", "--vm", "web01", "--target", "t", cwd=tmp_path)
    assert mixed.returncode == ConfigError.exit_code
    assert mixed.stderr == (
        "genievm: error: invalid configuration: --target: not with --instant (the VM runs on overlays)\n"
    )
