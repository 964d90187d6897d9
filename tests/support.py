"""Helpers shared by the core tests (imported by conftest.py and the test modules).

Everything here works on real things: sparse image files, repositories in
folders, the real backup and restore jobs through the built-in image provider.
"""

from __future__ import annotations

import random
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genievm_core.jobs import RestoreResult, run_backup, run_restore
from genievm_core.models.config import BackupConfig, RestoreConfig
from genievm_core.models.manifest import BackupManifest
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.storage import open_storage
from genievm_core.testing.cli import error_lines

CHUNK = 65536
FORMAT_DOC = Path(__file__).parents[1] / "docs" / "repository-format.md"
PASSPHRASE = "correct horse battery staple"

Layout = Sequence[tuple[int, bytes]]
RepoFactory = Callable[..., "tuple[Repository, Path]"]


def random_bytes(n: int, seed: int) -> bytes:
    """``n`` incompressible bytes, the same for the same seed."""
    return random.Random(seed).randbytes(n)


def text_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` compressible (but never all-zero) bytes."""
    rng = random.Random(seed)
    words = [b"genievm", b"chunk", b"extent", b"manifest", b"disk", b"backup", b"\n"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def write_image(path: Path, size: int, layout: Layout = ()) -> Path:
    """A sparse raw image of ``size`` bytes with ``data`` written at each ``offset``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in layout:
            assert offset + len(data) <= size, "layout runs past the image's size"
            f.seek(offset)
            f.write(data)
    return path


def patch_image(path: Path, layout: Layout) -> None:
    """Overwrite parts of an existing image in place (its holes elsewhere stay holes)."""
    with open(path, "r+b") as f:
        for offset, data in layout:
            f.seek(offset)
            f.write(data)


def chunk_files(repo_path: Path) -> list[Path]:
    """Every chunk object in a filesystem repository (temporary files excluded)."""
    root = repo_path / "chunks"
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))


def stray_files(root: Path) -> list[Path]:
    """Temporary or partial files left anywhere below ``root``."""
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or "genievm-partial" in p.name]


def open_repo(host: PluginHost, path: Path, passphrase: str | None = None) -> Repository:
    return Repository.open(
        open_storage(host, str(path)), passphrase=(lambda: passphrase) if passphrase is not None else None
    )


def backup_vm(host: PluginHost, repo: Repository, vm: str, disks: Mapping[str, Path], **config: Any) -> BackupManifest:
    """Back up ``vm`` made of the image files ``disks`` (name -> path) with the real job."""
    cfg = BackupConfig(
        vm_id=vm,
        backup_path=repo.url,
        provider_options={"vms": {vm: {name: str(path) for name, path in disks.items()}}},
        **config,
    )
    return run_backup(host, cfg, repo, workers=2)


def restore_vm(
    host: PluginHost, repo: Repository, vm: str, target: Path, backup_id: str = "latest", **config: Any
) -> RestoreResult:
    """Restore a backup of ``vm`` into the folder ``target`` with the real job."""
    cfg = RestoreConfig(vm_id=vm, backup_id=backup_id, backup_path=repo.url, restore_path=target, **config)
    return run_restore(host, cfg, repo, workers=2)


@dataclass
class CLIResult:
    code: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        """The lines of stderr but the one warning every open of an unencrypted repository prints."""
        return error_lines(self.stderr)

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("genievm: warning: ")]


def genievm_path() -> str:
    """The installed ``genievm`` console script of this venv."""
    exe = Path(sys.executable).parent / "genievm"
    if exe.exists():
        return str(exe)
    found = shutil.which("genievm")
    assert found, "the genievm console script is not installed (run `uv sync`)"
    return found


def restore_by_hand_program() -> str:
    """The program at the end of docs/repository-format.md, which restores a disk without GenieVM."""
    blocks = re.findall(r"```python\n(.*?)```", FORMAT_DOC.read_text(), re.S)
    assert blocks, "the format doc has no python program"
    return blocks[-1]
