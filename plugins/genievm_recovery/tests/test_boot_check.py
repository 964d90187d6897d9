"""``genievm verify --boot`` against the real libvirtd and QEMU, with a real guest that boots from its disk
(scripts/guest/build.sh: MBR, syslinux, a Debian kernel, a busybox init that beats on the serial console).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

ROOT = Path(__file__).resolve().parents[3]
GENIEVM = str(Path(sys.executable).parent / "genievm")
PASSPHRASE = "boot check passphrase"
HEARTBEAT = "GENIEVM-GUEST-ALIVE"
# QEMU's emulation: this machine's KVM (nested) cannot run syslinux's real-mode code ("KVM internal error")
ACCEL = os.environ.get("GENIEVM_TEST_BOOT_ACCEL", "tcg")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guest() -> Path:
    if os.geteuid() != 0 or shutil.which("libvirtd") is None:
        pytest.skip("the boot check starts VMs through qemu:///system, which needs root and libvirtd here")
    subprocess.run(["bash", str(ROOT / "scripts/services/libvirtd.sh")], check=True)
    built = subprocess.run(["bash", str(ROOT / "scripts/guest/build.sh")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip())


def genievm(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GENIEVM_PASSPHRASE": PASSPHRASE, "TMPDIR": str(cwd / "tmp")}
    (cwd / "tmp").mkdir(exist_ok=True)
    return subprocess.run([GENIEVM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def backed_up(tmp_path: Path, image: Path, vm: str) -> None:
    if not (tmp_path / "repo").exists():
        assert genievm("repo", "init", "repo", "--chunk-size", str(1 << 20), cwd=tmp_path).returncode == 0
    done = genievm("backup", "--vm", vm, "--disk", f"sda={image}", "--repo", "repo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def boot_check(tmp_path: Path, vm: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    done = genievm("verify", "--repo", "repo", "--vm", vm, "--backup", "latest", "--boot", "--boot-accel", ACCEL,
                   "--boot-pattern", HEARTBEAT, "--boot-screenshots", "shots", *extra, "--json",
                   cwd=tmp_path)  # fmt: skip
    reports = json.loads(done.stdout) if done.stdout.strip() else []
    (boot,) = [r for r in reports if r["verifier"] == "boot"]
    return done, boot


def nothing_left(tmp_path: Path) -> None:
    conn = libvirt.open("qemu:///system")
    try:
        assert [d.name() for d in conn.listAllDomains() if d.name().startswith("genievm-boot-")] == []
    finally:
        conn.close()
    assert list((tmp_path / "tmp").iterdir()) == []  # the overlays, the console log, the export's folder
    repo = str(tmp_path / "repo")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert f"repo={repo}" not in cmdline and "genievm-boot-" not in cmdline, cmdline  # no nbdkit, no qemu


def test_a_good_backup_boots(tmp_path: Path, guest: Path) -> None:
    backed_up(tmp_path, guest, "guest")
    before = sorted((tmp_path / "repo").rglob("*"))
    done, boot = boot_check(tmp_path, "guest", "--boot-timeout", "240")
    assert done.returncode == 0, done.stderr
    assert boot["problems"] == []
    details = boot["details"]
    assert isinstance(details, dict)
    assert details["heartbeat"] == f"{HEARTBEAT} genievm-guest"
    assert details["state"] == "running"
    shot = Path(tmp_path / str(details["screenshot"]))
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted((tmp_path / "repo").rglob("*")) == before  # nothing written to the repository
    nothing_left(tmp_path)


def test_a_backup_whose_boot_sector_was_zeroed_fails_with_the_reason(tmp_path: Path, guest: Path) -> None:
    broken = tmp_path / "broken.raw"
    shutil.copyfile(guest, broken)
    with open(broken, "r+b") as f:
        f.write(bytes(512))
    backed_up(tmp_path, broken, "broken")
    done, boot = boot_check(tmp_path, "broken", "--boot-timeout", "45")
    assert done.returncode == 22, done.stderr
    ((problem),) = boot["problems"]  # type: ignore[misc]
    assert problem["disk"] == "sda"
    assert problem["detail"].startswith("does not boot: no heartbeat within 45 s (pattern 'GENIEVM-GUEST-ALIVE'")
    assert "disk sda: its first sector has no boot signature (zeroed, or not a boot disk)" in problem["detail"]
    assert done.stderr.strip().endswith("verification found 1 problems in " + str(boot["backup_id"]) + ":sda")
    nothing_left(tmp_path)


def test_a_timeout_fails_cleanly_with_nothing_left(tmp_path: Path, guest: Path) -> None:
    backed_up(tmp_path, guest, "guest")
    done, boot = boot_check(tmp_path, "guest", "--boot-timeout", "1")
    assert done.returncode == 22, done.stderr
    ((problem),) = boot["problems"]  # type: ignore[misc]
    assert problem["detail"].startswith("does not boot: no heartbeat within 1 s"), problem
    assert "boot signature" not in problem["detail"]  # the disk itself is fine
    nothing_left(tmp_path)
