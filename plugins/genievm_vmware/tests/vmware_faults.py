"""VMwareFaultBed: the kill campaign of ``genievm_core.testing.faults`` against a vcsim VM, over https.

One scratch VM (two thin disks whose flat files hold uploaded random data,
holes between) on a vcsim: the tests' own, or, when none is given, one the
bed starts (``scripts/fault_campaign.py --provider vmware``). The guest's
writes between backups are uploads of the changed flat files. A kill may
leave GenieVM's snapshot on the VM (``after_kill`` records which); after
the next run the VM must have no snapshot at all: the run's own is removed
and the stale one swept. Only the ``backup`` job is killed.
"""

from __future__ import annotations

import secrets
import subprocess
from contextlib import ExitStack
from pathlib import Path

from genievm_vmware.describe import vm_disks
from genievm_vmware.snapshot import genievm_snapshots
from genievm_vmware.testing import Vcsim, get_file, put_file, remove_vm, scratch_vm, start_vcsim
from pyVmomi import vim

from genievm_core.testing.faults import ImageFaultBed, KillResult, genievm_command, kill_after

MiB = 1 << 20
SIZES = (24 * MiB, 8 * MiB)


def flat(path: str) -> str:
    return path.removesuffix(".vmdk") + "-flat.vmdk"


class VMwareFaultBed(ImageFaultBed):
    KINDS = ("backup",)

    def __init__(self, root: Path, *, seed: int = 0, vcsim: Vcsim | None = None) -> None:
        super().__init__(root, seed=seed, chunk_size=1 << 20)
        self.vcsim = vcsim
        self.vm: vim.VirtualMachine | None = None
        self.name = f"genievm-faults-{secrets.token_hex(3)}"
        self.images: dict[str, bytearray] = {}  # disk name → its content now (what was uploaded)
        self.files: dict[str, str] = {}  # disk name → its flat file in LocalDS_0
        self.left_by_kills: dict[int, list[str]] = {}  # kill number → GenieVM snapshots it left
        self._stack = ExitStack()

    def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.vcsim is None:
            self.vcsim = self._stack.enter_context(start_vcsim())
        self.env["GENIEVM_VMWARE_PASSWORD"] = self.vcsim.password
        si = self._stack.enter_context(self.vcsim.connect())
        self.vm = scratch_vm(si, self.name, list(SIZES))
        self._stack.callback(remove_vm, self.vm)  # before the connection closes (last in, first out)
        for disk, size in zip(vm_disks(list(self.vm.config.hardware.device)), SIZES, strict=True):
            image = bytearray(size)
            for _ in range(4):  # a few data runs, holes between them
                at = self.rng.randrange(0, size - MiB, 65536)
                image[at : at + MiB // 2] = self.rng.randbytes(MiB // 2)
            self.images[disk.name], self.files[disk.name] = image, flat(disk.path)
            put_file(self.vcsim, self.files[disk.name], bytes(image))
        self.backed_up = str(self.vm.config.instanceUuid)
        self.disks = {self.backed_up: {name: Path(p) for name, p in self.files.items()}}
        subprocess.run([*genievm_command(), "repo", "init", self.url, "--chunk-size", str(self.chunk_size)],
                       env=self.env, check=True, capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
        self.backup_in_process(self.backed_up)
        self.startup = kill_after([*genievm_command(), "plugins", "--json"], self.env, None).seconds

    def close(self) -> None:
        self._stack.close()

    def command(self, kind: str) -> list[str]:
        if kind != "backup":
            raise ValueError(f"the vmware bed kills backups only, not {kind!r}")
        assert self.vcsim is not None
        return [*genievm_command(), "backup", "--vm", self.name, "--repo", self.url, "--provider", "vmware",
                *self.vcsim.options(), "--workers", "2", "--json"]  # fmt: skip

    def backup_in_process(self, vm: str) -> None:  # a real process: the provider needs its own session
        run = kill_after(self.command("backup"), self.env, None)
        if run.returncode != 0:
            raise RuntimeError(f"backup failed: {run.stderr.strip()}")

    def change_disks(self, vm: str, writes: int = 4) -> None:
        assert self.vcsim is not None
        for name, image in self.images.items():
            for _ in range(writes):
                length = self.rng.randrange(4, 32) * 65536  # 256 KiB to 2 MiB: a read long enough to be hit
                at = self.rng.randrange(0, len(image) - length, 65536)
                image[at : at + length] = self.rng.randbytes(length)
            put_file(self.vcsim, self.files[name], bytes(image))

    def disk_bytes(self, vm: str, disk: str) -> bytes:
        assert self.vcsim is not None
        return get_file(self.vcsim, self.files[disk])  # what the datastore holds, not what the bed thinks

    def snapshots(self) -> list[str]:
        assert self.vm is not None
        return [t.name for t in genievm_snapshots(self.vm)]

    def after_kill(self, result: KillResult) -> None:
        self.left_by_kills[result.number] = self.snapshots()

    def leftovers(self) -> list[str]:
        assert self.vm is not None
        problems = [f"GenieVM snapshot {name} left on {self.name}" for name in self.snapshots()]
        if self.vm.snapshot is not None and not problems:
            problems.append(f"{self.name} has snapshots, none of them made by this bed")
        return problems
