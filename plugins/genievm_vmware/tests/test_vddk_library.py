"""Finding and loading libvixDiskLib.so, the ctypes layouts, and the VixError translation table.

Uses the VDDK ABI test double (tests/vddk_double), not VMware's library.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from genievm_vmware.transport.vddk import parse_modes  # noqa: E402
from genievm_vmware.vddk import VixErrorCode, abi, configured_libdir, find_library, load_library, translate  # noqa: E402
from vddk_double import fixtures  # noqa: E402
from vddk_double.fixtures import Double  # noqa: E402

from genievm_core.errors import AuthenticationError, ConfigError, ProviderError, VMNotFoundError  # noqa: E402

vddk_builds, vddk_env, vddk = fixtures.vddk_builds, fixtures.vddk_env, fixtures.vddk


def test_missing_library_names_the_directory_it_looked_in(tmp_path: Path) -> None:
    libdir = tmp_path / "vmware-vix-disklib-distrib"
    libdir.mkdir()
    with pytest.raises(ConfigError) as caught:
        load_library(libdir)
    message = str(caught.value)
    assert f"libvixDiskLib.so not found in {libdir / 'lib64'} or {libdir}" in message
    assert "VDDK_LIBDIR" in message
    assert caught.value.exit_code == 3


def test_missing_library_in_a_lib64_dir_names_only_that_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"not found in {tmp_path / 'lib64'} \("):
        find_library(tmp_path / "lib64")


def test_library_found_in_lib64_or_given_dir_and_versioned_names(tmp_path: Path) -> None:
    (tmp_path / "a" / "lib64").mkdir(parents=True)
    (tmp_path / "a" / "lib64" / "libvixDiskLib.so").touch()
    assert find_library(tmp_path / "a") == tmp_path / "a" / "lib64" / "libvixDiskLib.so"
    assert find_library(tmp_path / "a" / "lib64") == tmp_path / "a" / "lib64" / "libvixDiskLib.so"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "libvixDiskLib.so.8").touch()
    assert find_library(tmp_path / "b") == tmp_path / "b" / "libvixDiskLib.so.8"


def test_libdir_from_config_then_env_then_vmware_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VDDK_LIBDIR", "/srv/vddk")
    assert configured_libdir("/opt/x") == Path("/opt/x")
    assert configured_libdir(None) == Path("/srv/vddk")
    monkeypatch.delenv("VDDK_LIBDIR")
    assert configured_libdir() == Path("/opt/vmware-vix-disklib-distrib")


def test_a_file_that_is_not_a_library_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / "libvixDiskLib.so").write_text("not an ELF file")
    with pytest.raises(ConfigError, match="cannot load .*libvixDiskLib.so"):
        load_library(tmp_path)


def test_a_library_without_vixdisklib_functions_is_a_config_error(tmp_path: Path) -> None:
    source = tmp_path / "empty.c"
    source.write_text("int not_vddk(void) { return 0; }\n")
    (tmp_path / "lib64").mkdir()
    library = tmp_path / "lib64" / "libvixDiskLib.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    with pytest.raises(ConfigError, match="does not export VixDiskLib_InitEx"):
        load_library(tmp_path)


def test_older_library_loads_without_the_optional_functions(vddk_builds: dict[str, Path]) -> None:
    library = load_library(vddk_builds["before_6_7"].parent)
    assert library.has("VixDiskLib_Read")
    assert not library.has("VixDiskLib_QueryAllocatedBlocks")
    assert not library.has("VixDiskLib_AllocateConnectParams")
    assert library.distrib_dir == vddk_builds["before_6_7"].parent.parent


def test_ctypes_layouts_match_the_c_compilers(vddk: Double) -> None:
    load_library(vddk.libdir)
    layout = vddk.probe.layout
    assert layout("sizeof VixDiskLibConnectParams") == ctypes.sizeof(abi.ConnectParams)
    assert layout("offsetof creds") == abi.ConnectParams.creds.offset
    assert layout("offsetof port") == abi.ConnectParams.port.offset
    assert layout("offsetof specType") == abi.ConnectParams.specType.offset
    assert layout("sizeof VixDiskLibInfo") == ctypes.sizeof(abi.Info)
    assert layout("offsetof capacity") == abi.Info.capacity.offset
    assert layout("offsetof uuid") == abi.Info.uuid.offset
    assert layout("offsetof physicalSectorSize") == abi.Info.physicalSectorSize.offset
    assert layout("offsetof blocks") == abi.BlockList.blocks.offset


@pytest.mark.parametrize(
    ("err", "cls"),
    [
        (3014, AuthenticationError),  # VIX_E_HOST_USER_PERMISSIONS
        (35, AuthenticationError),  # VIX_E_AUTHENTICATION_FAIL
        (3047, AuthenticationError),  # VIX_E_INVALID_AUTHENTICATION_SESSION
        (4000, VMNotFoundError),  # VIX_E_VM_NOT_FOUND
        (4, ProviderError),  # VIX_E_FILE_NOT_FOUND
        (8, ProviderError),  # VIX_E_DISK_FULL: the datastore's, not GenieVM's storage
        (18000, ProviderError),  # VIX_E_CANNOT_CONNECT_TO_HOST
        (54321, ProviderError),  # unknown code
    ],
)
def test_translation_picks_the_genievm_error(err: int, cls: type[ProviderError]) -> None:
    error = translate(err, "library text", "VixDiskLib_Open", host="vc1", user="bob", subject="[ds] a.vmdk")
    assert type(error) is cls
    assert "library text" in str(error) and f"code {err}" in str(error)


def test_translation_uses_only_the_low_16_bits() -> None:
    err = (0x1234 << 32) | 4
    error = translate(err, "The file was not found", "VixDiskLib_Open", host="vc1", user="u", subject="[ds] x")
    assert str(error) == (
        "provider vmware: VixDiskLib_Open [ds] x at vc1: The file was not found (VIX_E_FILE_NOT_FOUND, code 4)"
    )
    login = translate(3014, "Insufficient permissions", "VixDiskLib_ConnectEx", host="vc1", user="bob")
    assert str(login).startswith("authentication failed for bob at vc1: VixDiskLib_ConnectEx: Insufficient")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("nbd", "nbd"), ("NBDSSL", "nbdssl"), ("hotadd:nbdssl", "hotadd:nbdssl"), ("san", "san"), ("auto", None)],
)
def test_transport_modes(mode: str, expected: str | None) -> None:
    assert parse_modes(mode) == expected


@pytest.mark.parametrize("mode", ["ftp", "nbd:", "hotadd:file"])
def test_unknown_transport_mode_is_a_config_error(mode: str) -> None:
    with pytest.raises(ConfigError, match="VDDK transport mode"):
        parse_modes(mode)


def test_error_table_in_docs_matches_the_translation() -> None:
    """docs/vddk.md's table: every named code has the documented number and becomes the documented error."""
    from genievm_core import errors

    doc = (Path(__file__).parents[3] / "docs" / "vddk.md").read_text()
    rows = re.findall(r"^\| (.*VIX_E_.*) \| `(\w+)` \((\d+)\) \|$", doc, re.M)
    assert len(rows) == 3
    checked = 0
    for codes, class_name, exit_code in rows:
        cls = getattr(errors, class_name)
        assert cls.exit_code == int(exit_code)
        for name, number in re.findall(r"`(VIX_E_\w+)` (\d+)", codes):
            assert VixErrorCode[name] == int(number)
            assert type(translate(int(number), "text", "VixDiskLib_Open", host="h", user="u")) is cls
            checked += 1
    assert checked == 11
