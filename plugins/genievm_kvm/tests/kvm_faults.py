"""KVMFaultBed: the kill campaign of ``genievm_core.testing.faults`` against a real libvirt VM, backed up live.

One scratch VM (two qcow2 disks, started paused: backups work on a paused VM)
on ``qemu:///system``; the guest's writes between backups go through QEMU's
``qemu-io``. After each kill and the next run, the hypervisor must hold
nothing beyond what the repository needs: no backup job, exactly one GenieVM
checkpoint of this repository (the newest backup's), no GenieVM snapshot, no
NBD socket or job file in the run folder. Used by ``test_kills.py`` and by
``scripts/fault_campaign.py --provider kvm``.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import libvirt
from genievm_kvm.testing import remove_vm, scratch_domain_xml
from kvm_support import URI, MiB, TestVM, create_images, guest_write

from genievm_core.testing.faults import ImageFaultBed, genievm_command, kill_after


class KVMFaultBed(ImageFaultBed):
    def __init__(self, root: Path, *, seed: int = 0) -> None:
        super().__init__(root, seed=seed, chunk_size=1 << 20)
        self.run_dir = root / "run"
        self.conn: libvirt.virConnect | None = None
        self.vm: TestVM | None = None

    def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        self.conn = libvirt.open(URI)
        name = f"genievm-faults-{secrets.token_hex(3)}"
        images = create_images(self.root, name, {"vda": (48 * MiB, "qcow2"), "vdb": (16 * MiB, "qcow2")}, 8)
        dom = self.conn.defineXML(scratch_domain_xml(name, images))
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        self.vm = TestVM(dom, name, {t: p for t, (p, _) in images.items()}, {t: f for t, (_, f) in images.items()})
        self.backed_up = self.vm.uuid
        self.disks = {self.vm.uuid: dict(self.vm.disks)}
        subprocess.run([*genievm_command(), "repo", "init", self.url, "--chunk-size", str(self.chunk_size)],
                       env=self.env, check=True, capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
        self.backup_in_process(self.vm.uuid)
        self.startup = kill_after([*genievm_command(), "plugins", "--json"], self.env, None).seconds

    def close(self) -> None:
        if self.vm is not None:
            remove_vm(self.vm.dom)
        if self.conn is not None:
            self.conn.close()

    def command(self, kind: str) -> list[str]:
        assert self.vm is not None
        if kind == "prune":
            return [*genievm_command(), "prune", "--repo", self.url, "--vm", self.vm.uuid, "--keep-last", "1",
                    "--grace", "0", "--json"]  # fmt: skip
        if kind != "backup":
            return super().command(kind)
        return [*genievm_command(), "backup", "--vm", self.vm.name, "--repo", self.url, "--provider", "kvm",
                "-o", f"uri={URI}", "-o", f"runDir={self.run_dir}", "--json"]  # fmt: skip

    def backup_in_process(self, vm: str) -> None:  # a real process: the provider needs its own connection
        run = kill_after(self.command("backup"), self.env, None)
        if run.returncode != 0:
            raise RuntimeError(f"backup failed: {run.stderr.strip()}")

    def change_disks(self, vm: str, writes: int = 3) -> None:
        assert self.vm is not None
        for disk_index, (_target, _path) in enumerate(sorted(self.vm.disks.items())):
            size = (48 if disk_index == 0 else 16) * MiB
            for _ in range(writes):
                length = self.rng.randrange(1, 8) * 65536
                offset = self.rng.randrange(0, size - length, 65536)
                guest_write(self.vm, disk_index, self.rng.randrange(1, 256), offset, length)

    def prepare(self, kind: str) -> None:
        assert self.vm is not None
        if kind == "gc":
            self.change_disks(self.vm.uuid)
            self.backup_in_process(self.vm.uuid)
            repo = self.repository()
            for backup_id in [m.backup_id for m in repo.manifests(self.vm.uuid)][:-1]:
                repo.storage.delete(f"manifests/{backup_id}")
        else:
            super().prepare(kind)

    def disk_bytes(self, vm: str, disk: str) -> bytes:
        raw = self.root / f"{disk}.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(self.disks[vm][disk]), str(raw)], check=True)
        try:
            return raw.read_bytes()
        finally:
            raw.unlink()

    def leftovers(self) -> list[str]:
        assert self.vm is not None
        dom = self.vm.dom
        problems = []
        try:
            dom.backupGetXMLDesc()
            problems.append(f"a backup job is still running on {self.vm.name}")
        except libvirt.libvirtError:
            pass  # no backup job: as it should be
        if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            problems.append(f"domain job {dom.jobInfo()} on {self.vm.name}")
        repo_id = self.repository().config.repository_id
        ours = [c.getName() for c in dom.listAllCheckpoints() if c.getName().startswith(f"genievm-{repo_id[:16]}-")]
        if len(ours) != 1:
            problems.append(f"{len(ours)} checkpoints of this repository: {ours} (the newest backup needs one)")
        snapshots = [s.getName() for s in dom.listAllSnapshots()]
        problems += [f"snapshot {name} left on {self.vm.name}" for name in snapshots if "genievm" in name]
        problems += [f"left in the run folder: {p.name}" for p in self.run_dir.iterdir()]
        return problems
