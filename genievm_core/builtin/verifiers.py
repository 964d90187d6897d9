"""The built-in verifiers: ``manifest``, ``chunks`` and ``data``.

- ``manifest``: every disk's index loads, fits the disk's size and chunk size,
  and matches the checksum in the manifest.
- ``chunks``: every chunk an index references exists in storage.
- ``data``: every referenced chunk is read, authenticated, decompressed and
  its id checked against its content (``genievm verify --read-data``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from genievm_core.errors import CorruptionError
from genievm_core.models.manifest import BackupManifest, DiskRecord
from genievm_core.plugin.marker import hookimpl
from genievm_core.plugin.protocols import Problem, RepositoryReader, VerifyReport
from genievm_core.plugin.registry import SelfCheckRegistry, VerifierRegistry
from genievm_core.repository.objects import ZERO_ID

__all__ = ["ChunksVerifier", "DataVerifier", "ManifestVerifier"]

BATCH = 16


@hookimpl
def genievm_register_verifiers(registry: VerifierRegistry) -> None:
    registry.add(ManifestVerifier())
    registry.add(ChunksVerifier())
    registry.add(DataVerifier())


@hookimpl
def genievm_register_self_checks(registry: SelfCheckRegistry) -> None:
    for name in ("Manifest", "Chunks", "Data"):
        registry.add(f"{name.lower()}-contract", f"genievm_core.builtin.checks::Test{name}Verifier")


def _indexes(
    repo: RepositoryReader, manifest: BackupManifest, report: VerifyReport
) -> Iterator[tuple[DiskRecord, Iterable[bytes]]]:
    for disk in manifest.disks:
        try:
            index = repo.disk_index(disk)
        except CorruptionError as exc:
            report.problems.append(Problem(disk.name, str(exc)))
            continue
        yield disk, index


class ManifestVerifier:
    name = "manifest"

    def verify(self, repository: RepositoryReader, manifest: BackupManifest) -> VerifyReport:
        report = VerifyReport(self.name, manifest.backup_id)
        for _disk, _index in _indexes(repository, manifest, report):
            report.checked += 1
        return report


class ChunksVerifier:
    name = "chunks"

    def verify(self, repository: RepositoryReader, manifest: BackupManifest) -> VerifyReport:
        report = VerifyReport(self.name, manifest.backup_id)
        for disk, index in _indexes(repository, manifest, report):
            for i, cid in enumerate(index):
                if cid == ZERO_ID:
                    continue
                report.checked += 1
                if not repository.has_chunk(cid):
                    report.problems.append(Problem(disk.name, f"chunk {cid.hex()} is missing", i))
        return report


class DataVerifier:
    name = "data"

    def __init__(self, workers: int = 4) -> None:
        self.workers = workers

    def verify(self, repository: RepositoryReader, manifest: BackupManifest) -> VerifyReport:
        report = VerifyReport(self.name, manifest.backup_id)

        def check(cid: bytes) -> str | None:
            try:
                repository.get_chunk(cid)
            except CorruptionError as exc:
                return str(exc)
            return None

        with ThreadPoolExecutor(self.workers) as pool:
            for disk, index in _indexes(repository, manifest, report):
                stored = [(i, cid) for i, cid in enumerate(index) if cid != ZERO_ID]
                for start in range(0, len(stored), BATCH):  # a bounded number of chunks in flight
                    batch = stored[start : start + BATCH]
                    for (i, _), problem in zip(batch, pool.map(check, [c for _, c in batch]), strict=True):
                        report.checked += 1
                        if problem:
                            report.problems.append(Problem(disk.name, problem, i))
        return report
