"""The built-in verifiers: ``manifest``, ``chunks`` and ``data``.

- ``manifest``: every disk's index loads, fits the disk's size and chunk size,
  and matches the checksum in the manifest.
- ``chunks``: every chunk an index references exists in storage (a patched
  one: the base and the patch its own index names).
- ``data``: every referenced chunk is read, authenticated, decompressed and
  its id checked against its content (``genievm verify --read-data``); a
  patched chunk through its own index's base and patch, so that another
  backup's patch of the same content, read in the same process, does not
  hide a damaged one.
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
from genievm_core.repository.patches import PatchRef

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
        has_object = getattr(repository, "has_object", None)  # a Repository's; a reader may lack it

        def present(cid: bytes, ref: PatchRef | None) -> bool:  # a patched chunk: its own index's base and patch
            if ref is None or has_object is None:
                return repository.has_chunk(cid)
            return bool(has_object(ref.patch) and (ref.base == ZERO_ID or has_object(ref.base)))

        for disk, index in _indexes(repository, manifest, report):
            patches = getattr(index, "patches", {})
            for i, cid in enumerate(index):
                if cid == ZERO_ID:
                    continue
                report.checked += 1
                if not present(cid, patches.get(i)):
                    report.problems.append(Problem(disk.name, f"chunk {cid.hex()} is missing", i))
        return report


class DataVerifier:
    name = "data"

    def __init__(self, workers: int = 4) -> None:
        self.workers = workers

    def verify(self, repository: RepositoryReader, manifest: BackupManifest) -> VerifyReport:
        report = VerifyReport(self.name, manifest.backup_id)

        patched_content = getattr(repository, "patched_content", None)  # a Repository's; a reader may lack it

        def check(chunk: tuple[bytes, PatchRef | None]) -> str | None:
            cid, ref = chunk
            try:
                if ref is not None and patched_content is not None:
                    patched_content(cid, ref, check_content=True)
                else:
                    repository.get_chunk(cid)
            except CorruptionError as exc:
                return str(exc)
            return None

        with ThreadPoolExecutor(self.workers) as pool:
            for disk, index in _indexes(repository, manifest, report):
                patches = getattr(index, "patches", {})
                stored = [(i, (cid, patches.get(i))) for i, cid in enumerate(index) if cid != ZERO_ID]
                for start in range(0, len(stored), BATCH):  # a bounded number of chunks in flight
                    batch = stored[start : start + BATCH]
                    for (i, _), problem in zip(batch, pool.map(check, [c for _, c in batch]), strict=True):
                        report.checked += 1
                        if problem:
                            report.problems.append(Problem(disk.name, problem, i))
        return report
