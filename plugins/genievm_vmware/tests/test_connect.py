"""Connecting: listing VMs, a wrong password, an unknown VM, certificates trusted or not, logging out."""

from __future__ import annotations

from genievm_core.testing.cli import error_lines

MiB = 1 << 20


def one_line(result, code):
    assert result.code == code, result.err
    lines = error_lines(result.err)
    assert len(lines) == 1, result.err
    return lines[0]


def test_lists_vms(cli, opt, make_vm):
    vm = make_vm()
    listed = cli("vms", *opt, "--json").json()
    assert {"id": vm.uuid, "name": vm.name, "state": "stopped"} in listed


def test_wrong_password_is_an_authentication_error(cli, opt, vcsim):
    result = cli("vms", *opt, check=False, password="not-the-password")
    line = one_line(result, 6)
    assert line == f"genievm: error: authentication failed for {vcsim.user} at {vcsim.host}:{vcsim.port}"
    assert "not-the-password" not in result.err + result.out


def test_unknown_vm(cli, opt, repo):
    line = one_line(cli("backup", "--vm", "no-such-vm", "--repo", repo, *opt, check=False), 7)
    assert line == "genievm: error: no VM no-such-vm on provider vmware"
    line = one_line(cli("backup", "--vm", "vm-987654", "--repo", repo, *opt, check=False), 7)
    assert line == "genievm: error: no VM vm-987654 on provider vmware"


def test_vm_found_by_moref_path_uuid_and_name(si, make_vm):
    from genievm_vmware.inventory import find_vm

    vm = make_vm()
    for ref in (vm.vm._moId, f"DC0/vm/{vm.name}", vm.uuid, str(vm.vm.config.uuid), vm.name):
        assert find_vm(si, ref)._moId == vm.vm._moId


def test_untrusted_certificate_is_refused_without_ca_file(cli, vcsim, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    base = ["vms", "--provider", "vmware", "-o", f"host={vcsim.host}", "-o", f"port={vcsim.port}"]
    base += ["-o", f"user={vcsim.user}"]
    line = one_line(cli(*base, check=False), 5)
    assert line.startswith(f"genievm: error: provider vmware: cannot connect to {vcsim.host}:{vcsim.port}: ")
    assert "TLS certificate is not trusted" in line and "caFile" in line
    assert cli(*base, "-o", f"caFile={vcsim.ca_file}").code == 0
    insecure = cli(*base, "-o", "insecure=true")
    assert insecure.code == 0


def test_missing_password_is_a_config_error(opt, monkeypatch, capsys):
    from genievm_core.testing import run_cli

    monkeypatch.delenv("GENIEVM_VMWARE_PASSWORD", raising=False)
    code, _, err = run_cli(monkeypatch, capsys, "vms", *opt)  # stdin is no terminal under pytest
    assert code == 3, err
    assert err.strip() == (
        "genievm: error: invalid providerOptions: password: set GENIEVM_VMWARE_PASSWORD, "
        "-o passwordFile=PATH, or run on a terminal"
    )


def test_sessions_are_logged_out(cli, opt, si, make_vm, repo):
    vm = make_vm([MiB])

    def sessions():
        return {s.key for s in si.content.sessionManager.sessionList}

    before = sessions()
    cli("vms", *opt)
    cli("backup", "--vm", vm.name, "--repo", repo, *opt)
    cli("backup", "--vm", "no-such-vm", "--repo", repo, *opt, check=False)
    assert sessions() == before
