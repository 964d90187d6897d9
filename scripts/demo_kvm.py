"""The main job with a real KVM VM (run by scripts/demo.sh as root, with libvirtd started).

A VM with no OS and two qcow2 disks runs paused (backups work the same on a paused VM); the
"guest" writes through QEMU's qemu-io monitor command. Every step is the genievm CLI. vda holds an MBR
table and a small ext4 partition with a known file (made with sfdisk and mkfs.ext4 -d, nothing mounted);
the demo ends by taking that file out of the latest backup with ``genievm files get``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import libvirt
from genievm_kvm.testing import qemu_io, remove_vm, scratch_domain_xml

URI = "qemu:///system"
NAME, RESTORED = "genievm-demo", "genievm-demo-restored"
MiB = 1 << 20
GENIEVM = str(Path(sys.executable).with_name("genievm"))
KVM = ["--provider", "kvm", "--provider-option", f"uri={URI}"]
KNOWN_FILE = "notes/read me.txt"  # in the guest's ext4 partition
KNOWN_TEXT = "GenieVM demo: this file was restored from a backup of a running VM.\n"


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def genievm(*args: str) -> None:
    print("$ " + shlex.join(["genievm", *args]), flush=True)
    subprocess.run([GENIEVM, *args], check=True)


def remove_named_vm(conn: libvirt.virConnect, name: str) -> None:
    try:
        remove_vm(conn.lookupByName(name))
    except libvirt.libvirtError:
        pass  # no VM of that name


def guest_write(dom: libvirt.virDomain, disk: int, pattern: int, offset_mib: int, length_mib: int) -> None:
    for command in (f"write -P {pattern:#x} {offset_mib}M {length_mib}M", "flush"):
        qemu_io(dom, disk, command)


def disk_with_a_filesystem(demo: Path, image: Path) -> Path:
    """A 256 MiB qcow2 whose first MiBs are an MBR table and a 24 MiB ext4 partition holding KNOWN_FILE."""
    tree, part, raw = demo / "guest-files", demo / "part1.img", demo / "vda.raw"
    (tree / KNOWN_FILE).parent.mkdir(parents=True)
    (tree / KNOWN_FILE).write_text(KNOWN_TEXT)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(part), "24M"], check=True)
    with open(raw, "wb") as f:
        f.truncate(256 * MiB)
    subprocess.run(["sfdisk", "-q", str(raw)], input="label: dos\nstart=2048, size=49152, type=83\n", text=True,
                   check=True)  # fmt: skip
    with open(raw, "r+b") as f:
        f.seek(MiB)
        f.write(part.read_bytes())
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(image)], check=True)
    raw.unlink()
    part.unlink()
    return image


def main(demo: Path) -> None:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open(URI)
    repo, restored = str(demo / "repo"), demo / "restored"
    try:
        for name in (NAME, RESTORED):
            remove_named_vm(conn, name)
        step(f"making VM {NAME}: two qcow2 disks (256 MiB with an ext4 partition, and 64 MiB), started paused")
        disks = {"vda": disk_with_a_filesystem(demo, demo / "vda.qcow2"), "vdb": demo / "vdb.qcow2"}
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disks["vdb"]), "64M"], check=True)
        dom = conn.defineXML(scratch_domain_xml(NAME, {t: (p, "qcow2") for t, p in disks.items()}))
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        for i in range(32, 256, 32):  # past the partition
            guest_write(dom, 0, 0x40 + i // 32, i, 8)
        guest_write(dom, 1, 0x7E, 10, 20)
        genievm("vms", *KVM)

        step("creating an encrypted repository")
        genievm("repo", "init", repo)
        step("full backup of the running VM (libvirt backup API, NBD; a checkpoint is created)")
        genievm("backup", "--vm", NAME, "--repo", repo, *KVM)
        step("the guest writes 3 MiB")
        guest_write(dom, 0, 0xC1, 100, 2)
        guest_write(dom, 1, 0xC2, 40, 1)
        step("incremental backup: only the checkpoint's dirty extents are read")
        genievm("backup", "--vm", NAME, "--repo", repo, *KVM)
        genievm("backups", "list", "--repo", repo)
        step("verifying every chunk of every backup")
        genievm("verify", "--repo", repo, "--read-data")
        step(f"restoring the latest backup as a new VM {RESTORED} (new UUID and MAC addresses)")
        genievm("restore", "--vm", NAME, "--repo", repo, *KVM, "--target", str(restored), "--new-name", RESTORED)

        step("the job registry: every command above ran as a job")
        genievm("jobs", "list")
        step("what retention would remove with --keep-last 1 (dry run)")
        genievm("prune", "--repo", repo, "--keep-last", "1", "--dry-run")

        step("result: the restored disks against the source's")
        for target, image in disks.items():
            copy = restored / f"{RESTORED}-{target}.qcow2"
            subprocess.run(["qemu-img", "compare", "-U", str(image), str(copy)], check=True)
        print(f"{RESTORED}: {conn.lookupByName(RESTORED).UUIDString()} (source {dom.UUIDString()})")
        subprocess.run(["du", "-sh", repo], check=True)

        step(f"restoring one file, /{KNOWN_FILE}, from the latest backup (libguestfs over an NBD export of it)")
        genievm("files", "get", "--repo", repo, "--vm", NAME, f"/{KNOWN_FILE}", "--to", str(demo / "files"))
        restored_file = demo / "files" / Path(KNOWN_FILE).name
        if restored_file.read_text() != KNOWN_TEXT:
            raise SystemExit(f"demo: {restored_file} differs from the file written into the guest")
        print(f"{restored_file}: the same bytes as /{KNOWN_FILE} in the guest: {restored_file.read_text().strip()}")
    finally:
        for name in (NAME, RESTORED):
            remove_named_vm(conn, name)
        conn.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
