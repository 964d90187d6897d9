"""Bad input gives one clear line and its exit code; an interrupted backup leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest
from kvm_support import PASSPHRASE, URI, MiB, guest_write

from genievm_core.testing.cli import error_lines

OPT = ["--provider", "kvm", "-o", f"uri={URI}"]


def one_line(result, code):
    assert result.code == code, result.err
    lines = error_lines(result.err)
    assert len(lines) == 1, result.err
    return lines[0]


def test_wrong_uri_is_a_provider_error(cli, repo):
    line = one_line(cli("vms", "--provider", "kvm", "-o", "uri=qemu:///nosuch", check=False), 5)
    assert line.startswith("genievm: error: provider kvm: cannot connect to qemu:///nosuch:")


def test_unknown_vm(cli, repo, libvirt_conn):
    line = one_line(cli("backup", "--vm", "no-such-vm", "--repo", repo, *OPT, check=False), 7)
    assert line == f"genievm: error: no VM no-such-vm on provider kvm ({URI})"


def test_read_only_connection_is_denied_a_backup(make_vm, cli, repo):
    vm = make_vm({"vda": (8 * MiB, "qcow2")})
    line = one_line(cli("backup", "--vm", vm.name, "--repo", repo, *OPT, "-o", "readOnly=true", check=False), 5)
    assert "permission denied" in line and vm.name in line
    assert vm.dom.listAllCheckpoints() == []


def test_quiesce_without_guest_agent_fails_clearly(make_vm, cli, repo):
    vm = make_vm({"vda": (8 * MiB, "qcow2")})
    line = one_line(cli("backup", "--vm", vm.name, "--repo", repo, *OPT, "--quiesce", check=False), 5)
    assert "--quiesce needs the QEMU guest agent" in line
    assert vm.dom.listAllCheckpoints() == []
    with pytest.raises(libvirt.libvirtError):
        vm.dom.backupGetXMLDesc()  # no backup job


def test_restore_never_overwrites_without_force(make_vm, cli, repo, tmp_path):
    vm = make_vm({"vda": (8 * MiB, "qcow2")})
    guest_write(vm, 0, 0x61, 0, MiB)
    cli("backup", "--vm", vm.name, "--repo", repo, *OPT)
    restore = ["restore", "--vm", vm.uuid, "--repo", repo, *OPT, "--target", str(tmp_path / "r")]
    line = one_line(cli(*restore, "--new-name", vm.name, check=False), 23)
    assert line == f"genievm: error: VM {vm.name} exists; pass --force to restore its disks into it"
    line = one_line(cli(*restore, "--new-name", vm.name, "--force", check=False), 5)
    assert "stop it to restore into it" in line

    guest_write(vm, 0, 0x62, 0, MiB)  # changed after the backup ...
    vm.dom.destroy()
    cli(*restore, "--new-name", vm.name, "--force")  # ... and restored into the stopped VM
    out = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "read -P 0x61 0 1M", str(vm.disks["vda"])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Pattern verification failed" not in out and "read 1048576/1048576" in out
    assert vm.dom.checkpointLookupByName  # the VM itself is the same one
    assert [d.UUIDString() for d in vm.dom.connect().listAllDomains() if d.name() == vm.name] == [vm.uuid]


def _run_dir_of(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    return run


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_backup_leaves_nothing_behind(make_vm, repo, tmp_path, sig):
    vm = make_vm({"vda": (256 * MiB, "qcow2")}, random_mib=64)  # random data: some seconds at zstd -19
    run = _run_dir_of(tmp_path)
    args = ["backup", "--vm", vm.name, "--repo", repo, *OPT, "-o", f"runDir={run}", "--compression-level", "19"]
    exe = str(Path(sys.executable).with_name("genievm"))
    env = {**os.environ, "GENIEVM_PASSPHRASE": PASSPHRASE}
    proc = subprocess.Popen([exe, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(run.glob("*.sock")):  # the backup job is serving its export: mid-backup
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130, err
        assert err.strip() == "genievm: error: interrupted by SIGTERM"
        with pytest.raises(libvirt.libvirtError):
            vm.dom.backupGetXMLDesc()  # the job was aborted
        assert list(run.iterdir()) == [] and vm.dom.listAllCheckpoints() == []
    else:
        assert proc.returncode == -signal.SIGKILL
    # the next run finds (and aborts) what a killed run left, and completes
    done = subprocess.run([exe, *args[:-2], "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(libvirt.libvirtError):
        vm.dom.backupGetXMLDesc()
    assert list(run.iterdir()) == []
    assert len(vm.dom.listAllCheckpoints()) == 1


def test_second_backup_of_a_vm_being_backed_up_is_refused(make_vm, cli, repo, tmp_path):
    """libvirt runs one backup job per VM: a second GenieVM backup says so and leaves the first alone."""
    vm = make_vm({"vda": (256 * MiB, "qcow2")}, random_mib=64)  # random data: some seconds at zstd -19
    other = str(tmp_path / "other")
    cli("repo", "init", other)
    run = _run_dir_of(tmp_path)
    args = ["backup", "--vm", vm.name, *OPT, "-o", f"runDir={run}"]
    exe = str(Path(sys.executable).with_name("genievm"))
    env = {**os.environ, "GENIEVM_PASSPHRASE": PASSPHRASE}
    first = subprocess.Popen(
        [exe, *args, "--repo", repo, "--compression-level", "19"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list(run.glob("*.sock")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    second = cli(*args, "--repo", other, check=False)
    assert second.code == 5, second.err
    assert f"VM {vm.name} is being backed up by another GenieVM process (pid {first.pid})" in second.err
    out, err = first.communicate(timeout=600)  # generous: zstd -19 on a busy 2-core machine
    assert first.returncode == 0, err
    assert list(run.iterdir()) == []
