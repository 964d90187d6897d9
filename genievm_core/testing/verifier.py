"""The verifier contract: tests every ``Verifier`` must pass, run by each plugin that registers one.

A plugin's test module subclasses ``VerifierContract``, supplies the
``verifier`` fixture and lists in ``detects`` the kinds of damage it finds:

- ``"missing-chunk"``: a chunk of a disk is deleted from storage;
- ``"corrupt-chunk"``: a byte of a stored chunk is changed;
- ``"corrupt-index"``: a byte of a disk's index is changed.

The backup verified is a real one (the built-in ``image`` provider, two disks
``vda`` and ``vdb``, into a repository in memory); the damage is done to
``vdb`` only. What the core relies on, and these tests check: a clean backup
gives a report with no problems, named after the verifier and the backup;
each damage it detects gives problems, all naming the damaged disk; no
verifier raises on damage, it reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from genievm_core.jobs import run_backup
from genievm_core.models.config import BackupConfig
from genievm_core.models.manifest import BackupManifest
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import Verifier, VerifyReport
from genievm_core.repository import Repository

__all__ = ["DAMAGE", "VerifierContract"]

DAMAGED_DISK = "vdb"


def _flip(repo: Repository, key: str) -> None:
    blob = bytearray(repo.storage.get(key))
    blob[len(blob) // 2] ^= 0xFF
    repo.storage.put(key, bytes(blob))


def _a_chunk(repo: Repository, manifest: BackupManifest) -> str:
    disk = next(d for d in manifest.disks if d.name == DAMAGED_DISK)
    vda = next(d for d in manifest.disks if d.name != DAMAGED_DISK)
    shared = repo.disk_index(vda).stored_ids()  # the objects: a patched chunk's base and patch, not its id
    index = repo.disk_index(disk)
    whole = [c for i, c in index.stored_entries() if i not in index.patches]  # in disk order
    own = [c for c in whole + sorted(index.stored_ids() - set(whole)) if c not in shared]
    return repo.chunk_key(own[0])


def _index(repo: Repository, manifest: BackupManifest) -> str:
    return next(d.index for d in manifest.disks if d.name == DAMAGED_DISK)


DAMAGE: dict[str, Callable[[Repository, BackupManifest], None]] = {
    "missing-chunk": lambda repo, m: repo.storage.delete(_a_chunk(repo, m)),
    "corrupt-chunk": lambda repo, m: _flip(repo, _a_chunk(repo, m)),
    "corrupt-index": lambda repo, m: _flip(repo, _index(repo, m)),
}


class VerifierContract:
    """Subclass as ``Test...``, supply the ``verifier`` fixture and set ``detects``."""

    #: the kinds of damage the verifier finds (keys of ``DAMAGE``)
    detects: ClassVar[tuple[str, ...]] = ()

    @pytest.fixture
    def verifier(self) -> Verifier:
        pytest.fail(f"{type(self).__name__} must override the `verifier` fixture")

    @pytest.fixture
    def backup(self, genievm_host: PluginHost, genievm_repository: Repository, tmp_path: Path) -> BackupManifest:
        """A backup of two disks of 4.5 chunks, each with data of its own and a hole."""
        size = genievm_repository.chunk_size
        disks = {}
        for n, name in enumerate(("vda", DAMAGED_DISK)):
            path = tmp_path / f"{name}.img"
            with open(path, "wb") as f:
                f.truncate(4 * size + size // 2)
                for chunk in (0, 2, 4):
                    f.seek(chunk * size)
                    f.write(bytes([n * 16 + chunk + 1]) * (size // 2))
            disks[name] = str(path)
        config = BackupConfig(
            vm_id="contract-vm", backup_path=genievm_repository.url, provider_options={"vms": {"contract-vm": disks}}
        )
        return run_backup(genievm_host, config, genievm_repository, workers=2)

    def test_a_clean_backup_has_no_problems(
        self, verifier: Verifier, genievm_repository: Repository, backup: BackupManifest
    ) -> None:
        report = verifier.verify(genievm_repository, backup)
        assert isinstance(report, VerifyReport)
        assert report.ok, f"problems in a clean backup: {report.problems}"
        assert report.verifier == verifier.name and report.backup_id == backup.backup_id
        assert report.checked > 0, "the report counts what it checked"

    @pytest.mark.parametrize("damage", sorted(DAMAGE))
    def test_damage_is_reported_naming_the_disk(
        self, verifier: Verifier, genievm_repository: Repository, backup: BackupManifest, damage: str
    ) -> None:
        DAMAGE[damage](genievm_repository, backup)
        report = verifier.verify(genievm_repository, backup)
        assert report.verifier == verifier.name
        if damage not in self.detects:
            return  # not this verifier's kind of damage; it still must not raise
        assert report.problems, f"{damage} of disk {DAMAGED_DISK} went unreported"
        assert {p.disk for p in report.problems} == {DAMAGED_DISK}, report.problems
        assert all(p.detail for p in report.problems)
