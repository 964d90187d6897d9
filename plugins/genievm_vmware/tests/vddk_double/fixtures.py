"""pytest fixtures for the VDDK tests; test modules import them by name.

- ``vddk_builds``: the double compiled once per session, ``{"current": path, "before_6_7": path}``.
- ``vddk_env``: datastores under ``tmp_path/datastores`` and the double's accepted
  credentials, set in the environment the double reads.
- ``vddk``: a :class:`Double` with a fresh copy of the library (``libdir``), its
  probe, the datastore root, and helpers to create disk files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .build import DoubleProbe, compile_double, install_double

HOST = "vc.double.test"
USER = "backup@vsphere.local"
PASSWORD = "Pa55-w0rd-only-the-double-knows"
THUMBPRINT = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01"
DATASTORE = "LocalDS_0"


@dataclass
class Double:
    """One test's copy of the VDDK test double and its datastores."""

    libdir: Path
    probe: DoubleProbe
    datastores: Path

    def disk_file(self, path: str, size: int, datastore: str = DATASTORE) -> Path:
        """A sparse disk file of ``size`` bytes at ``[datastore] path``, all hole."""
        file = self.datastores / datastore / path
        file.parent.mkdir(parents=True, exist_ok=True)
        with file.open("wb") as f:
            f.truncate(size)
        return file


@pytest.fixture(scope="session")
def vddk_builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vddk-double-build")
    return {
        "current": compile_double(root / "current"),
        "before_6_7": compile_double(root / "before-6.7", before_6_7=True),
    }


@pytest.fixture
def vddk_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    datastores = tmp_path / "datastores"
    datastores.mkdir()
    monkeypatch.setenv("GENIEVM_VDDK_DOUBLE_ROOT", str(datastores))
    monkeypatch.setenv("GENIEVM_VDDK_DOUBLE_SERVER", HOST)
    monkeypatch.setenv("GENIEVM_VDDK_DOUBLE_USER", USER)
    monkeypatch.setenv("GENIEVM_VDDK_DOUBLE_PASSWORD", PASSWORD)
    monkeypatch.setenv("GENIEVM_VDDK_DOUBLE_THUMBPRINT", THUMBPRINT)
    monkeypatch.delenv("GENIEVM_VDDK_DOUBLE_NO_QUERY", raising=False)
    monkeypatch.delenv("GENIEVM_VDDK_DOUBLE_FAIL_CLOSE", raising=False)
    monkeypatch.delenv("GENIEVM_VDDK_DOUBLE_LOG_PASSWORD", raising=False)
    monkeypatch.delenv("VDDK_LIBDIR", raising=False)
    yield datastores


def make_double(build: Path, tmp_path: Path, datastores: Path, name: str = "vmware-vix-disklib-distrib") -> Double:
    libdir = install_double(build, tmp_path / name)
    return Double(libdir=libdir, probe=DoubleProbe(libdir / "lib64" / "libvixDiskLib.so"), datastores=datastores)


@pytest.fixture
def vddk(vddk_builds: dict[str, Path], vddk_env: Path, tmp_path: Path) -> Double:
    return make_double(vddk_builds["current"], tmp_path, vddk_env)
