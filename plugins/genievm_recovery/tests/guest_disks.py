"""Real guest disks for the file-restore tests, made without mounting anything on the host.

ext4 comes from ``mkfs.ext4 -d``, FAT from ``mkfs.vfat`` and ``mcopy``, MBR
partition tables from ``sfdisk``; GPT, LVM, XFS and btrfs from libguestfs
itself (a writable appliance of its own, filled with ``tar_in``).
"""

from __future__ import annotations

import importlib
import os
import random
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

MiB = 1 << 20
WHEN = 1_700_000_000  # 2023-11-14 22:13:20 UTC: whole seconds (tar keeps seconds)


def source_tree(root: Path) -> Path:
    """A guest's files: names with spaces and unicode, nested folders, modes, an empty and a 1.5 MiB file."""
    files = {
        "etc/hosts": b"127.0.0.1 localhost\n10.0.0.5 db01\n",
        "etc/app.conf": b"[main]\nlisten = 0.0.0.0:8080\n",
        "home/notes with spaces.txt": b"first line\nsecond line\n",
        "home/caf\u00e9/r\u00e9sum\u00e9 \u00fcn\u00efc\u00f8de.txt": "d\u00e9j\u00e0 vu \u2713\n".encode(),
        "srv/data/random.bin": random.Random(7).randbytes(3 * MiB // 2),
        "srv/data/empty": b"",
        "srv/run.sh": b"#!/bin/sh\necho hello\n",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "srv/run.sh").chmod(0o750)
    (root / "home/caf\u00e9").chmod(0o700)
    for i, path in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):  # deepest first
        os.utime(path, (WHEN + i, WHEN + 1000 + i), follow_symlinks=False)
    os.utime(root, (WHEN, WHEN))
    return root


def escape_links(root: Path, outside: Path) -> None:
    """Links that point out of any target: absolute, and climbing with ``..``."""
    (root / "escape").mkdir()
    (root / "escape/absolute").symlink_to(outside)
    (root / "escape/climbing").symlink_to("../../../../../../" + str(outside).lstrip("/"))
    (root / "escape/passwd").symlink_to("/etc/passwd")
    for path in (root / "escape").iterdir():
        os.utime(path, (WHEN, WHEN), follow_symlinks=False)
    os.utime(root / "escape", (WHEN, WHEN))


def ext4(path: Path, size: int, source: Path) -> Path:
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(source), str(path), str(size // 1024)], check=True)
    return path


def vfat(path: Path, size: int, source: Path) -> Path:
    path.unlink(missing_ok=True)
    subprocess.run(["mkfs.vfat", "-C", str(path), str(size // 1024)], check=True, capture_output=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}
    items = [str(p) for p in sorted(source.iterdir())]
    subprocess.run(["mcopy", "-s", "-m", "-i", str(path), *items, "::/"], check=True, env=env)
    return path


def mbr_disk(path: Path, size: int, partitions: Sequence[tuple[Path, str]]) -> Path:
    """A disk of ``size`` with an MBR table: one partition per (filesystem image, type code), 1 MiB aligned."""
    with open(path, "wb") as f:
        f.truncate(size)
    script, offset = ["label: dos"], MiB
    for image, kind in partitions:
        script.append(f"start={offset // 512}, size={image.stat().st_size // 512}, type={kind}")
        offset += image.stat().st_size
    subprocess.run(["sfdisk", "-q", str(path)], input="\n".join(script) + "\n", text=True, check=True)
    offset = MiB
    with open(path, "r+b") as disk:
        for image, _ in partitions:
            disk.seek(offset)
            disk.write(image.read_bytes())
            offset += image.stat().st_size
    return path


def gpt_lvm_disk(path: Path, size: int, source: Path) -> Path:
    """GPT: partition 1 an LVM PV (VG ``guestvg``, LV ``data`` in XFS), partition 2 btrfs; both hold ``source``."""
    archive = path.with_suffix(".tar")
    with tarfile.open(archive, "w") as tar:
        for item in sorted(source.iterdir()):
            tar.add(item, arcname=item.name)
    guestfs = importlib.import_module("guestfs")
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend_settings(["force_tcg"])
    g.disk_create(str(path), "raw", size)
    g.add_drive_opts(str(path), format="raw")
    g.launch()
    try:
        g.part_init("/dev/sda", "gpt")
        g.part_add("/dev/sda", "p", 2048, 2048 + 320 * 2048 - 1)  # 320 MiB: XFS needs 300 at least
        g.part_add("/dev/sda", "p", 2048 + 320 * 2048, -2048)
        g.pvcreate("/dev/sda1")
        g.vgcreate("guestvg", ["/dev/sda1"])
        g.lvcreate("data", "guestvg", 312)
        g.mkfs("xfs", "/dev/guestvg/data")
        g.mkfs("btrfs", "/dev/sda2")
        for device in ("/dev/guestvg/data", "/dev/sda2"):
            g.mount(device, "/")
            g.tar_in(str(archive), "/")
            g.umount_all()
        g.shutdown()
    finally:
        g.close()
        archive.unlink()
    return path


def compare_trees(source: Path, copy: Path, *, modes: bool = True, times: bool = True) -> list[str]:
    """What differs between two trees (names, bytes, link texts, modes, modification seconds); [] when alike."""
    differences = []
    names = {p.relative_to(source) for p in source.rglob("*")}
    copied = {p.relative_to(copy) for p in copy.rglob("*")}
    differences += [f"missing {n}" for n in sorted(names - copied)] + [f"extra {n}" for n in sorted(copied - names)]
    for name in sorted(names & copied):
        a, b = source / name, copy / name
        sa, sb = a.lstat(), b.lstat()
        if a.is_symlink() or b.is_symlink():
            if not (a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)):
                differences.append(f"link {name}")
        elif a.is_file() and (not b.is_file() or a.read_bytes() != b.read_bytes()):
            differences.append(f"bytes {name}")
        if modes and (sa.st_mode & 0o7777) != (sb.st_mode & 0o7777) and not a.is_symlink():
            differences.append(f"mode {name} {sa.st_mode & 0o7777:o} {sb.st_mode & 0o7777:o}")
        if times and int(sa.st_mtime) != int(sb.st_mtime):
            differences.append(f"mtime {name} {int(sa.st_mtime)} {int(sb.st_mtime)}")
    return differences
