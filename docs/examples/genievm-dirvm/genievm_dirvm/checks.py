"""The contract self-checks of genievm-dirvm: GenieVM's contract suites over a VM folder made for them.

They need nothing but a temporary folder, so ``genievm plugins --check`` can run
them on an operator's machine; the plugin's own tests (tests/) import them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from genievm_core.jobs import RestoreResult, run_backup
from genievm_core.models.config import BackupConfig
from genievm_core.models.extents import Extent
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.testing import CBTCase, CBTSourceContract, ProviderContract

from genievm_dirvm.cbt import BlockHashCBT
from genievm_dirvm.provider import DirVMProvider

__all__ = ["TestBlockHashCBT", "TestDirVMProvider", "make_vm_folder"]

KiB = 1024


def make_vm_folder(root: Path, name: str = "web01") -> Path:
    """A folder with VM ``name``: sidecar, ``vda`` (1 MiB, data at 0 and 512 KiB, a hole between)
    and ``vdb`` (200 KiB, data in the middle)."""
    root.mkdir(parents=True, exist_ok=True)
    layout = {"vda": (1024 * KiB, [(0, 64 * KiB), (512 * KiB, 100 * KiB)]), "vdb": (200 * KiB, [(64 * KiB, 72 * KiB)])}
    disks = {}
    for disk, (size, writes) in layout.items():
        image = root / f"{name}-{disk}.img"
        with open(image, "wb") as f:
            f.truncate(size)
            for offset, length in writes:
                f.seek(offset)
                f.write(os.urandom(length))
        disks[disk] = image.name
    (root / f"{name}.json").write_text(json.dumps({"name": name, "disks": disks, "memory_mib": 512}))
    return root


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


# [guide:provider-contract]
class TestDirVMProvider(ProviderContract):
    provider_name = "dirvm"

    @pytest.fixture
    def folder(self, tmp_path: Path) -> Path:
        return make_vm_folder(tmp_path / "vms")

    @pytest.fixture
    def provider_options(self, folder: Path) -> dict[str, Any]:
        return {"root": str(folder)}

    @pytest.fixture
    def vm_id(self) -> str:
        return "web01"

    @pytest.fixture
    def mutate_disk(self, folder: Path) -> Callable[[str, int, int, int], None]:
        def mutate(disk: str, offset: int, length: int, pattern: int) -> None:
            patch(folder / f"web01-{disk}.img", offset, bytes([pattern]) * length)

        return mutate

    @pytest.fixture
    def restore_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"restore_path": tmp_path / "restored", "new_vm_name": "web01-copy"}

    @pytest.fixture
    def read_restored(self, restore_config: dict[str, Any]) -> Callable[[RestoreResult, str], bytes]:
        def read(result: RestoreResult, disk: str) -> bytes:
            sidecar = json.loads((restore_config["restore_path"] / f"{result.vm_id}.json").read_text())
            return Path(sidecar["disks"][disk]).read_bytes()

        return read

    @pytest.fixture
    def backup_artifacts(self, folder: Path) -> Callable[[], set[str]]:
        # what a backup may leave in the folder: only block maps of committed backups
        return lambda: {str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix != ".map"}


# [/guide:provider-contract]


class TestBlockHashCBT(CBTSourceContract):
    @pytest.fixture
    def cbt_source(self) -> BlockHashCBT:
        return BlockHashCBT()

    @pytest.fixture
    def cbt_case(self, genievm_host: PluginHost, genievm_repository: Repository, tmp_path: Path) -> CBTCase:
        folder = make_vm_folder(tmp_path / "vms")
        config = BackupConfig(
            vm_id="web01",
            backup_path=genievm_repository.url,
            provider="dirvm",
            provider_options={"root": str(folder)},
        )
        manifest = run_backup(genievm_host, config, genievm_repository, workers=2)
        token = manifest.disks[0].cbt.token
        assert token, "the first backup returns a token"
        patch(folder / "web01-vda.img", 300 * KiB, b"\xee" * 10)  # one block, in a hole
        patch(folder / "web01-vda.img", 1000 * KiB, b"\xee" * 24 * KiB)  # the last block
        written = [Extent(300 * KiB, 10), Extent(1000 * KiB, 24 * KiB)]
        disk = DirVMProvider({"root": str(folder)}).describe_vm("web01").disks[0]
        return CBTCase(disk, token, written)
