"""Details: paged changed areas, a disk without a flat extent, no password in logs, restore options checked."""

from __future__ import annotations

import os

from genievm_vmware.cbt import is_reset
from genievm_vmware.testing import put_file

MiB = 1 << 20
BLOCK = 64 << 10


def flat(path):
    return path.removesuffix(".vmdk") + "-flat.vmdk"


def test_changed_areas_are_paged(cli, opt, vcsim, make_vm, repo):
    """More areas than the double answers at once (256): the provider must follow startOffset to the end."""
    vm = make_vm([48 * MiB])
    ((name, (path, size)),) = vm.disks.items()
    data = bytearray(size)
    for offset in range(0, size, 2 * BLOCK):  # every other 64 KiB block: 384 separate areas
        data[offset : offset + BLOCK] = os.urandom(BLOCK)
    put_file(vcsim, flat(path), bytes(data))
    manifest = cli("backup", "--vm", vm.name, "--repo", repo, *opt, "--json").json()
    (disk,) = manifest["disks"]
    assert disk["stats"]["bytes_read"] == size // 2


def test_https_reads_the_vmdk_itself_where_there_is_no_flat_extent(si, vcsim):
    """A disk whose data is in its .vmdk (no -flat file beside it) is read from there."""
    import secrets

    from genievm_vmware.connection import Endpoint, session_cookie, ssl_context
    from genievm_vmware.transport import DiskLocation
    from genievm_vmware.transport.https import HTTPSTransport

    path = f"genievm-test-{secrets.token_hex(3)}/disk.vmdk"
    data = os.urandom(4096)
    put_file(vcsim, path, data)
    ep = Endpoint(vcsim.host, vcsim.port, vcsim.user, vcsim.password, vcsim.ca_file)
    transport = HTTPSTransport(host=vcsim.host, port=vcsim.port, cookie=session_cookie(si), context=ssl_context(ep))
    try:
        handle = transport.open(DiskLocation("vm-1", "DC0", "LocalDS_0", path, MiB))
        assert handle.read(0, 8192) == data + bytes(4096)  # past the file's end the disk reads as zeros
        assert handle.allocated_extents() == [(0, 4096)]
    finally:
        transport.close()
        si.content.fileManager.DeleteDatastoreFile_Task(f"[LocalDS_0] {path.split('/')[0]}", _datacenter(si))


def _datacenter(si):
    return si.content.searchIndex.FindByInventoryPath("DC0")


def test_no_password_in_debug_logs(cli, opt, vcsim, make_vm, repo):
    vm = make_vm([MiB])
    result = cli("--log-level", "debug", "backup", "--vm", vm.name, "--repo", repo, *opt)
    assert "vmware.connected" in result.err
    assert vcsim.password not in result.err + result.out


def test_unknown_network_in_a_restore_is_a_config_error(cli, opt, vcsim, si, make_vm, repo):
    from genievm_vmware.inventory import lookup_vm

    vm = make_vm([MiB])
    cli("backup", "--vm", vm.name, "--repo", repo, *opt)
    new = f"{vm.name}-r"
    restore = ["restore", "--vm", vm.uuid, "--repo", repo, *opt, "--new-name", new]
    result = cli(*restore, "-o", "networkMap=VM Network=No Such Net", check=False)
    assert result.code == 3, result.err
    assert "network 'No Such Net' (card " in result.err
    assert "standard backing on 'VM Network') is not in datacenter DC0" in result.err
    result = cli(*restore, "-o", "datastore=NoSuchDS", check=False)
    assert result.code == 3 and "datastore: NoSuchDS is not one of datacenter DC0's datastores" in result.err
    assert lookup_vm(si, new) is None


def test_cbt_reset_is_told_by_the_change_id_uuid():
    assert is_reset("52 aa bb/4", "52 cc dd/7")
    assert not is_reset("52 aa bb/4", "52 aa bb/9")
    assert not is_reset("52 aa bb/4", None)


def test_session_kept_alive_while_data_moves(cli, opt, vcsim, make_vm, repo, monkeypatch):
    import time

    from genievm_vmware.transport import https

    vm = make_vm([2 * MiB])
    ((_, (path, _)),) = vm.disks.items()
    put_file(vcsim, flat(path), os.urandom(MiB))
    real_read = https.HTTPSDiskHandle.read

    def slow_read(self, offset, length):
        time.sleep(0.5)  # a long copy, shortened
        return real_read(self, offset, length)

    monkeypatch.setattr(https.HTTPSDiskHandle, "read", slow_read)
    args = ["--log-level", "debug", "backup", "--vm", vm.name, "--repo", repo, *opt, "-o", "keepAliveSeconds=0.1"]
    result = cli(*args)
    assert result.err.count("vmware.keepalive ") >= 2


def test_https_refuses_a_descriptor_without_flat_extent(si, vcsim):
    import secrets

    import pytest
    from genievm_vmware.connection import Endpoint, session_cookie, ssl_context
    from genievm_vmware.transport import DiskLocation
    from genievm_vmware.transport.https import HTTPSTransport

    from genievm_core.errors import ProviderError

    path = f"genievm-test-{secrets.token_hex(3)}/disk.vmdk"
    put_file(vcsim, path, b'# Disk DescriptorFile\\nversion=1\\ncreateType="vsanSparse"\\n')
    ep = Endpoint(vcsim.host, vcsim.port, vcsim.user, vcsim.password, vcsim.ca_file)
    transport = HTTPSTransport(host=vcsim.host, port=vcsim.port, cookie=session_cookie(si), context=ssl_context(ep))
    try:
        with pytest.raises(ProviderError, match="has no flat extent the https transport can read"):
            transport.open(DiskLocation("vm-1", "DC0", "LocalDS_0", path, MiB))
    finally:
        transport.close()
        si.content.fileManager.DeleteDatastoreFile_Task(f"[LocalDS_0] {path.split('/')[0]}", _datacenter(si))


def test_datacenter_path_is_the_folder_urls_dc_path(si):
    from genievm_vmware.inventory import datacenter_path

    assert datacenter_path(_datacenter(si)) == "DC0"
