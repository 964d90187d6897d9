"""virtnbdbackup (Debian's package) on bench_kvm.py's VM: full, incremental and restore, without and with --compress.

virtnbdbackup refuses a VM that has checkpoints it did not create, so each variant runs its own
chain on the VM alone: the earlier chain's checkpoints are deleted first, as bench_kvm.py does
before GenieVM's. Its backup is a directory of stream files; virtnbdrestore turns the chain
back into a qcow2 image, which is compared with the VM's disk as it was backed up.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import install_debian_tools

TOOLS = {"virtnbdbackup": "virtnbdbackup", "virtnbdrestore": "virtnbdbackup"}
VARIANTS = {"vnb": [], "vnbz": ["--compress"]}  # step prefix: virtnbdbackup options


def ensure_installed() -> None:
    install_debian_tools(TOOLS)


def version() -> str:
    out = subprocess.run(["virtnbdbackup", "-V"], capture_output=True, text=True)
    return (out.stdout or out.stderr).strip()


def backup_cmd(vm: str, level: str, out: Path, scratch: Path, options: list[str]) -> list[str]:
    socket = scratch / f"virtnbdbackup-{vm}.sock"
    cmd = ["virtnbdbackup", "-d", vm, "-l", level, "-o", str(out), "-S", str(scratch), "-f", str(socket), "-n"]
    return cmd + options


def restore_cmd(backup: Path, target: Path, scratch: Path) -> list[str]:
    return ["virtnbdrestore", "-i", str(backup), "-o", str(target), "-n", "-f", str(scratch / "virtnbdrestore.sock")]


def peer_round(
    variant: str,
    vm: str,
    work: Path,
    measure: Callable[[str, list[str]], Any],
    change: Callable[[], None],
    restored_matches: Callable[[Path], None],
) -> list[Any]:
    """One variant's full, the guest's change, incremental and restore; ``measure`` runs and times each."""
    out, target, scratch = work / f"{variant}-backup", work / f"{variant}-restore", work / "run"
    for folder in (out, target):
        shutil.rmtree(folder, ignore_errors=True)
    scratch.mkdir(exist_ok=True)
    options = VARIANTS[variant]
    steps = [measure(f"{variant}-full", backup_cmd(vm, "full", out, scratch, options))]
    change()
    steps.append(measure(f"{variant}-incremental", backup_cmd(vm, "inc", out, scratch, options)))
    target.mkdir()
    steps.append(measure(f"{variant}-restore", restore_cmd(out, target, scratch)))
    images = [p for p in target.iterdir() if p.suffix not in (".xml", ".json")]  # named as the VM's image
    if len(images) != 1:
        raise SystemExit(f"bench: virtnbdrestore wrote {len(images)} images into {target}, not 1")
    restored_matches(images[0])
    shutil.rmtree(out)
    shutil.rmtree(target)
    return steps
