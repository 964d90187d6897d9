"""A libvirt connection over SSH (qemu+ssh://): the backup job serves NBD over TCP on the remote host."""

from __future__ import annotations

from pathlib import Path

from kvm_support import MiB, guest_write

from genievm_core.testing.cli import error_lines


def test_backup_over_ssh(make_vm, cli, repo, ssh_uri, free_port, tmp_path):
    vm = make_vm({"vda": (16 * MiB, "qcow2")})
    remote = ["--provider", "kvm", "-o", f"uri={ssh_uri}", "-o", f"nbdPort={free_port}"]
    listed = cli("vms", *remote, "--json").json()
    assert vm.uuid in {v["id"] for v in listed}

    guest_write(vm, 0, 0x31, 2 * MiB, MiB)
    full = cli("backup", "--vm", vm.name, "--repo", repo, *remote, "--json").json()
    assert full["stats"]["bytes_read"] == MiB
    guest_write(vm, 0, 0x32, 9 * MiB, 4096)
    vda = cli("backup", "--vm", vm.name, "--repo", repo, *remote, "--json").json()["disks"][0]
    assert vda["cbt"]["mode"] == "cbt" and vda["stats"]["bytes_scanned"] == MiB
    assert [c.getName() for c in vm.dom.listAllCheckpoints()] == [vda["cbt"]["token"]]
    assert not list(Path("/var/tmp").glob("genievm-*.scratch"))  # libvirt removed the job's scratch files

    restore = cli("restore", "--vm", vm.uuid, "--repo", repo, *remote, "--target", str(tmp_path / "r"), check=False)
    assert restore.code == 5 and "a remote connection" in restore.err and "run GenieVM on that host" in restore.err
    vm.dom.destroy()
    stopped = cli("backup", "--vm", vm.name, "--repo", repo, *remote, check=False)
    assert stopped.code == 5 and f"backing up stopped VM {vm.name}" in stopped.err


def test_wrong_ssh_key_is_a_clear_error(cli, ssh_uri, tmp_path):
    bad = ssh_uri.split("?")[0] + f"?keyfile={tmp_path}/nokey&no_verify=1&no_tty=1"
    result = cli("vms", "--provider", "kvm", "-o", f"uri={bad}", check=False)
    assert result.code == 6, result.err
    assert result.err.startswith("genievm: error: provider kvm: cannot connect to qemu+ssh://root@127.0.0.1:")
    assert "authentication failed" in result.err and "Permission denied (publickey" in result.err
    assert len(error_lines(result.err)) == 1
