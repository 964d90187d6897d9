"""A libvirt connection over SSH (qemu+ssh://), to this machine's libvirtd through a private sshd, as if remote.

Running VMs: the backup job serves NBD over TCP with TLS. Stopped VMs and restores: qemu-img and
qemu-nbd run through ssh, the NBD socket forwarded by ssh.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import libvirt
import pytest
from genievm_kvm.errors import TransportSecurityError
from genievm_kvm.testing import remove_vm
from kvm_support import MiB, guest_write, raw_copy, same_content
from tls_support import certificate_authority, client_certificates

from genievm_core.testing.cli import error_lines


def _image_bitmaps(image: Path) -> set[str]:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(image)], capture_output=True, text=True)
    return {b["name"] for b in json.loads(out.stdout)["format-specific"]["data"].get("bitmaps", [])}


def _serving(image: Path) -> list[int]:
    """Processes whose command line names ``image`` (a qemu-nbd left behind would)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(image).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass  # gone meanwhile
    return found


@pytest.fixture
def restored(libvirt_conn: libvirt.virConnect):
    names: list[str] = []
    yield names
    for name in names:
        try:
            remove_vm(libvirt_conn.lookupByName(name))
        except libvirt.libvirtError:
            pass


def test_backup_restore_and_stopped_backup_over_ssh(
    make_vm, cli, repo, ssh_uri, free_port, nbd_tls_dir, tmp_path, libvirt_conn, restored
):
    vm = make_vm({"vda": (16 * MiB, "qcow2")})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    remote = ["--provider", "kvm", "-o", f"uri={ssh_uri}", "-o", f"nbdPort={free_port}", "-o", f"tlsDir={nbd_tls_dir}",
              "-o", f"scratchDir={scratch}"]  # fmt: skip
    listed = cli("vms", *remote, "--json").json()
    assert vm.uuid in {v["id"] for v in listed}

    guest_write(vm, 0, 0x31, 2 * MiB, MiB)
    full = cli("backup", "--vm", vm.name, "--repo", repo, *remote, "--json").json()
    assert full["stats"]["bytes_read"] == MiB
    guest_write(vm, 0, 0x32, 9 * MiB, 4096)
    vda = cli("backup", "--vm", vm.name, "--repo", repo, *remote, "--json").json()["disks"][0]
    assert vda["cbt"]["mode"] == "cbt" and vda["stats"]["bytes_scanned"] == MiB
    assert [c.getName() for c in vm.dom.listAllCheckpoints()] == [vda["cbt"]["token"]]
    assert not list(scratch.iterdir())  # libvirt removed the job's scratch files
    backed_up = raw_copy(vm.disks["vda"], tmp_path / "backed-up.raw")

    # a restore: the VM defined over the connection, its disk written by qemu-nbd through ssh
    new_name = f"{vm.name}-r"
    restored.append(new_name)
    target = tmp_path / "r"
    cli("restore", "--vm", vm.uuid, "--repo", repo, *remote, "--target", str(target), "--new-name", new_name)
    disk = target / f"{new_name}-vda.qcow2"
    assert same_content(disk, backed_up)
    assert str(disk) in libvirt_conn.lookupByName(new_name).XMLDesc(0)
    assert not list(target.glob("*.genievm-partial"))

    # a stopped VM: its checkpoint's bitmap in the image, read by qemu-nbd through ssh
    vm.dom.destroy()
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x33 {5 * MiB} 4096", str(vm.disks["vda"])],
        check=True,
        capture_output=True,
    )
    stopped = cli("backup", "--vm", vm.name, "--repo", repo, *remote, "--json").json()["disks"][0]
    assert stopped["cbt"]["mode"] == "cbt" and stopped["cbt"]["source"] == "qcow2-bitmap", stopped["cbt"]
    assert stopped["stats"]["bytes_scanned"] == MiB
    assert stopped["cbt"]["token"] in _image_bitmaps(vm.disks["vda"])  # the new bitmap, added over ssh
    assert not _serving(vm.disks["vda"])  # the remote qemu-nbd stopped with the backup
    restored.append(f"{vm.name}-r2")
    cli("restore", "--vm", vm.uuid, "--repo", repo, *remote, "--target", str(tmp_path / "r2"),
        "--new-name", f"{vm.name}-r2", "--disk-format", "vda=raw")  # fmt: skip
    assert same_content(tmp_path / "r2" / f"{vm.name}-r2-vda.raw", vm.disks["vda"])


def test_tls_certificates_missing_or_untrusted_is_one_clear_line(
    make_vm, cli, repo, ssh_uri, free_port, libvirt_server_certificates, tmp_path
):
    vm = make_vm({"vda": (4 * MiB, "qcow2")})
    remote = ["--provider", "kvm", "-o", f"uri={ssh_uri}", "-o", f"nbdPort={free_port}"]
    result = cli("backup", "--vm", vm.name, "--repo", repo, *remote, "-o", f"tlsDir={tmp_path}/none", check=False)
    assert result.code == 38, result.err
    assert result.err.startswith("genievm: error: provider kvm: NBD over TLS to 127.0.0.1: no readable ca-cert.pem")
    assert "-o nbdTls=false" in result.err and len(error_lines(result.err)) == 1
    assert not vm.dom.listAllCheckpoints()  # nothing was started

    stranger = client_certificates(certificate_authority(tmp_path / "other-ca"), tmp_path / "other")
    untrusted = cli("backup", "--vm", vm.name, "--repo", repo, *remote, "-o", f"tlsDir={stranger}", check=False)
    assert untrusted.code == 38, untrusted.err
    assert untrusted.err.startswith("genievm: error: provider kvm: NBD over TLS to 127.0.0.1: ")
    assert f"check the certificates in {stranger}" in untrusted.err and len(error_lines(untrusted.err)) == 1
    assert not vm.dom.listAllCheckpoints()  # the backup job was aborted, its checkpoint dropped
    with pytest.raises(libvirt.libvirtError):
        vm.dom.backupGetXMLDesc()
    doc = (Path(__file__).parents[3] / "docs" / "errors.md").read_text()
    assert TransportSecurityError.exit_code == 38 and re.search(r"^\| 38 \| `TransportSecurityError` \|", doc, re.M)


def test_ssh_password(make_vm, cli, repo, ssh_password_uri, free_port, tmp_path):
    uri, password = ssh_password_uri
    vm = make_vm({"vda": (4 * MiB, "qcow2")}, running=False)
    remote = ["--provider", "kvm", "-o", f"uri={uri}", "-o", f"nbdPort={free_port}"]
    with_password = {"GENIEVM_KVM_SSH_PASSWORD": password}
    assert vm.uuid in {v["id"] for v in cli("vms", *remote, "--json", extra_env=with_password).json()}
    # a stopped VM: qemu-img and qemu-nbd through GenieVM's own ssh, with the same password
    qemu_io = ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x41 {MiB} {MiB}", str(vm.disks["vda"])]
    subprocess.run(qemu_io, check=True, capture_output=True)
    password_file = tmp_path / "ssh-password"
    password_file.write_text(password + "\n")
    backup = cli("--log-level", "debug", "backup", "--vm", vm.name, "--repo", repo, *remote,
                 "-o", f"sshPasswordFile={password_file}", "--json")  # fmt: skip
    assert backup.json()["stats"]["bytes_read"] == MiB
    assert password not in backup.out + backup.err
    stored = b"".join(p.read_bytes() for p in Path(repo).rglob("*") if p.is_file())
    assert password.encode() not in stored and password.encode() not in (tmp_path / "jobs.sqlite").read_bytes()

    wrong = cli("vms", *remote, check=False, extra_env={"GENIEVM_KVM_SSH_PASSWORD": "not " + password})
    assert wrong.code == 6, wrong.err
    assert "authentication failed" in wrong.err and len(error_lines(wrong.err)) == 1


def test_wrong_ssh_key_is_a_clear_error(cli, ssh_uri, tmp_path):
    bad = ssh_uri.split("?")[0] + f"?keyfile={tmp_path}/nokey&no_verify=1&no_tty=1"
    result = cli("vms", "--provider", "kvm", "-o", f"uri={bad}", check=False)
    assert result.code == 6, result.err
    assert result.err.startswith("genievm: error: provider kvm: cannot connect to qemu+ssh://root@127.0.0.1:")
    assert "authentication failed" in result.err and "Permission denied (publickey" in result.err
    assert len(error_lines(result.err)) == 1
