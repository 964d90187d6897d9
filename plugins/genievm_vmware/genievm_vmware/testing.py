"""Test support: a vcsim of one's own, scratch VMs, and datastore files over HTTPS.

Used by the plugin's tests and ``benchmarks/bench_vmware.py``. vcsim is govmomi's
vSphere API simulator, built from Debian's sources by
``plugins/genievm_vmware/tests/vcsim/build.sh`` (with GenieVM's test double of
QueryChangedDiskAreas: see that folder).
"""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlparse

from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

__all__ = ["Vcsim", "datastore_url", "from_env", "get_file", "put_file", "remove_vm", "scratch_vm", "start_vcsim"]

BUILD = Path(__file__).resolve().parents[1] / "tests" / "vcsim" / "build.sh"
DATACENTER = "DC0"
DATASTORE = "LocalDS_0"


@dataclass(frozen=True)
class Vcsim:
    url: str  # https://127.0.0.1:PORT/sdk
    user: str
    password: str = field(repr=False)
    ca_file: Path
    datacenter: str = DATACENTER  # "ha-datacenter" on an ESXi host

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlparse(self.url).port or 443

    def options(self) -> list[str]:
        """``-o`` options for the CLI (the password goes through GENIEVM_VMWARE_PASSWORD)."""
        return ["-o", f"host={self.host}", "-o", f"port={self.port}", "-o", f"user={self.user}",
                "-o", f"caFile={self.ca_file}"]  # fmt: skip

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    @contextmanager
    def connect(self) -> Iterator[vim.ServiceInstance]:
        si = SmartConnect(host=self.host, port=self.port, user=self.user, pwd=self.password, sslContext=self.context())
        try:
            yield si
        finally:
            Disconnect(si)

    def forget_change_ids(self) -> None:
        """The test double's CBT reset: every changeId given so far becomes unknown."""
        req = urllib.request.Request(f"https://{self.host}:{self.port}/genievm-double/forget-change-ids", method="POST")
        urllib.request.urlopen(req, context=self.context(), timeout=30).close()


def from_env() -> Vcsim | None:
    url = os.environ.get("GENIEVM_TEST_VCSIM_URL")
    if not url:
        return None
    return Vcsim(
        url,
        os.environ.get("GENIEVM_TEST_VCSIM_USER", "user"),
        os.environ.get("GENIEVM_TEST_VCSIM_PASSWORD", "pass"),
        Path(os.environ["GENIEVM_TEST_VCSIM_CA_FILE"]),
    )


@contextmanager
def start_vcsim(*, esx: bool = False, password: str | None = None) -> Iterator[Vcsim]:
    """Build (when needed) and run a private vcsim (a vCenter, or with ``esx`` an ESXi host); SIGTERM stops it.

    Its user is ``genievm``, its password ``password`` (default: a random one).
    """
    binary = subprocess.run(["bash", str(BUILD)], check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="genievm-vcsim-") as folder:
        ca = Path(folder) / "ca.pem"
        password = password or secrets.token_urlsafe(12)
        cmd = [binary, "-listen", "127.0.0.1:0", "-username", "genievm", "-password", password, "-ca-file", str(ca)]
        cmd += ["-esx"] if esx else []
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "TMPDIR": folder}
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if not line.startswith("VCSIM_URL="):
                raise RuntimeError(f"vcsim did not start: {line!r}")
            sim = Vcsim(line.split("=", 1)[1], "genievm", password, ca, "ha-datacenter" if esx else DATACENTER)
            _wait_for_about(sim)
            yield sim
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _wait_for_about(sim: Vcsim) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"https://{sim.host}:{sim.port}/about", context=sim.context(), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def datastore_url(sim: Vcsim, path: str, datastore: str = DATASTORE) -> str:
    query = urlencode({"dcPath": sim.datacenter, "dsName": datastore})
    return f"https://{sim.host}:{sim.port}/folder/{quote(path)}?{query}"


def put_file(sim: Vcsim, path: str, data: bytes) -> None:
    req = urllib.request.Request(datastore_url(sim, path), data=data, method="PUT")
    urllib.request.urlopen(req, context=sim.context(), timeout=300).close()


def get_file(sim: Vcsim, path: str) -> bytes:
    with urllib.request.urlopen(datastore_url(sim, path), context=sim.context(), timeout=300) as resp:
        data: bytes = resp.read()
        return data


def scratch_vm(si: vim.ServiceInstance, name: str, disk_sizes: list[int]) -> vim.VirtualMachine:
    """A new powered-off VM in the first datacenter, with a SCSI controller, thin disks and one NIC."""
    content: Any = si.RetrieveContent()
    dc: Any = next(e for e in content.rootFolder.childEntity if isinstance(e, vim.Datacenter))
    pool: Any = next(c for c in dc.hostFolder.childEntity if isinstance(c, vim.ComputeResource)).resourcePool
    add = vim.vm.device.VirtualDeviceSpec.Operation.add
    scsi = vim.vm.device.ParaVirtualSCSIController(key=-1, busNumber=0, sharedBus="noSharing")
    changes = [vim.vm.device.VirtualDeviceSpec(operation=add, device=scsi)]
    for unit, size in enumerate(disk_sizes):
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=f"[{DATASTORE}]", diskMode="persistent", thinProvisioned=True
        )
        disk = vim.vm.device.VirtualDisk(
            key=-(unit + 2), controllerKey=-1, unitNumber=unit, capacityInKB=size // 1024, backing=backing
        )
        changes.append(vim.vm.device.VirtualDeviceSpec(operation=add, fileOperation="create", device=disk))
    nic = vim.vm.device.VirtualVmxnet3(
        key=-100,
        addressType="generated",
        backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"),
    )
    changes.append(vim.vm.device.VirtualDeviceSpec(operation=add, device=nic))
    spec = vim.vm.ConfigSpec(
        name=name, guestId="otherGuest64", numCPUs=1, memoryMB=64, files=vim.vm.FileInfo(vmPathName=f"[{DATASTORE}]"),
        deviceChange=changes,
    )  # fmt: skip
    task = dc.vmFolder.CreateVM_Task(config=spec, pool=pool)
    WaitForTask(task)
    vm: vim.VirtualMachine = task.info.result
    return vm


def remove_vm(vm: vim.VirtualMachine) -> None:
    """Power off and destroy (with its files); quiet when it is gone already."""
    try:
        if vm.runtime.powerState == "poweredOn":
            WaitForTask(vm.PowerOffVM_Task())
        WaitForTask(vm.Destroy_Task())
    except vim.fault.VimFault:
        pass
    except Exception as exc:  # ManagedObjectNotFound: removed already
        if "ManagedObjectNotFound" not in type(exc).__name__:
            raise
