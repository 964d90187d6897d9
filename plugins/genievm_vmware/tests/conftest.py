"""Fixtures for the VMware plugin's tests: a real vSphere API simulator (vcsim), real HTTPS.

- ``vcsim``: the simulator ``scripts/services/vcsim.sh`` started (``GENIEVM_TEST_VCSIM_URL``), or
  one of this session's own, built from Debian's govmomi sources (``tests/vcsim/build.sh``).
- ``si``: a pyvmomi connection to it, for the tests' own checks and set-up.
- ``make_vm(sizes)``: a new powered-off VM with thin disks of those sizes, destroyed after the test.
- ``cli(*args)``: ``genievm ARGS`` in this process (so a test can inject a failure), with the
  vSphere password in GENIEVM_VMWARE_PASSWORD; ``.json()`` parses ``--json`` output.
- ``repo``: a new encrypted repository with 1 MiB chunks.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyVmomi")
sys.path.insert(0, str(Path(__file__).parent))  # vmware_faults, for test_kills.py

from genievm_vmware.describe import vm_disks  # noqa: E402
from genievm_vmware.testing import Vcsim, from_env, remove_vm, scratch_vm, start_vcsim  # noqa: E402
from pyVmomi import vim  # noqa: E402

from genievm_core.testing import run_cli  # noqa: E402

PASSPHRASE = "vmware test passphrase"
MiB = 1 << 20


@dataclass
class CLIResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class TestVM:
    __test__ = False

    vm: vim.VirtualMachine
    name: str

    @property
    def uuid(self) -> str:
        return str(self.vm.config.instanceUuid)

    @property
    def disks(self) -> dict[str, tuple[str, int]]:
        """disk name → (path in LocalDS_0, capacity)."""
        return {d.name: (d.path, d.capacity) for d in vm_disks(list(self.vm.config.hardware.device))}

    def genievm_snapshots(self) -> list[str]:
        from genievm_vmware.snapshot import genievm_snapshots

        return [t.name for t in genievm_snapshots(self.vm)]


@pytest.fixture(autouse=True)
def _own_job_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENIEVM_JOB_DB", str(tmp_path / "jobs.sqlite"))


@pytest.fixture(scope="session")
def vcsim() -> Iterator[Vcsim]:
    sim = from_env()
    if sim is not None:
        yield sim
        return
    if shutil.which("go") is None or not Path("/usr/share/gocode/src/github.com/vmware/govmomi").is_dir():
        pytest.skip("vcsim needs golang-go and golang-github-vmware-govmomi-dev (scripts/setup.sh installs them)")
    with start_vcsim() as sim:
        yield sim


@pytest.fixture(scope="session")
def si(vcsim: Vcsim) -> Iterator[vim.ServiceInstance]:
    with vcsim.connect() as si:
        yield si


@pytest.fixture
def make_vm(si: vim.ServiceInstance) -> Iterator[Callable[..., TestVM]]:
    made: list[vim.VirtualMachine] = []

    def make(sizes: list[int] | None = None, name: str | None = None) -> TestVM:
        name = name or f"genievm-test-{secrets.token_hex(3)}"
        vm = scratch_vm(si, name, sizes or [8 * MiB])
        made.append(vm)
        return TestVM(vm, name)

    yield make
    for vm in made:
        remove_vm(vm)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], vcsim: Vcsim) -> Callable[..., CLIResult]:
    env = {"GENIEVM_PASSPHRASE": PASSPHRASE, "GENIEVM_VMWARE_PASSWORD": vcsim.password}

    def run(*args: str, check: bool = True, password: str | None = None) -> CLIResult:
        code, out, err = run_cli(
            monkeypatch, capsys, *args, env={**env, "GENIEVM_VMWARE_PASSWORD": password or vcsim.password}
        )
        if check and code != 0:
            raise AssertionError(f"genievm {' '.join(args)} exited {code}: {err}")
        return CLIResult(code, out, err)

    return run


@pytest.fixture
def opt(vcsim: Vcsim) -> list[str]:
    """``--provider vmware`` and the ``-o`` options that reach the simulator."""
    return ["--provider", "vmware", *vcsim.options()]


@pytest.fixture
def repo(cli: Callable[..., CLIResult], tmp_path: Path) -> str:
    path = tmp_path / "repo"
    cli("repo", "init", str(path), "--chunk-size", str(MiB))
    return str(path)
