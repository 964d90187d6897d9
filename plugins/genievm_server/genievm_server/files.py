"""File restore from a backup's guest filesystem through the recovery plugin's ``files`` job (genievm-recovery,
``genievm files``): the backup's disks served over NBD, libguestfs over them, the filesystem mounted read-only.

Listing a folder runs the job in the request (the appliance starts in seconds with KVM, tens of seconds
without); extracting files under the server's ``restore_root`` is a job like any other, started and watched
through ``/api/v1/jobs``. Without genievm-recovery installed both are a clear error, and the console shows no
file restore.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genievm_core.jobs import Job, default_job_db
from genievm_server.errors import NotInstalledError

if TYPE_CHECKING:
    from genievm_recovery.files_job import FilesJob

    from genievm_server.service import Service

__all__ = ["available", "list_folder", "start_extract"]

RECOVERY = "genievm_recovery"


def available() -> bool:
    """Whether genievm-recovery (``genievm files``) is installed beside the server."""
    return importlib.util.find_spec(RECOVERY) is not None


def list_folder(service: Service, repository: str, vm: str | None, backup: str, path: str) -> dict[str, Any]:
    """The entries of the folder ``path`` in the guest (``genievm files ls --json``)."""
    job = _files_job(service, repository, vm, backup, "ls", [path])
    service.genievm.run(job)
    return {**(job.result or {}), "entries": [entry.as_json() for entry in job.entries]}


def start_extract(
    service: Service, repository: str, vm: str | None, backup: str, paths: list[str], restore_path: str
) -> Job:
    """Start copying ``paths`` of the guest into the folder ``restore_path`` under the server's restore_root."""
    target = service.settings.restore_folder(restore_path)
    return service.start(_files_job(service, repository, vm, backup, "get", paths, target))


def _files_job(
    service: Service,
    repository: str,
    vm: str | None,
    backup: str,
    action: str,
    paths: list[str],
    target: Path | None = None,
) -> FilesJob:
    if not available():
        raise NotInstalledError("file restore needs genievm-recovery (genievm files), which this server lacks")
    from genievm_recovery.export import Export, cleanup_stale, exports_root
    from genievm_recovery.files_job import FilesJob

    root = exports_root(service.settings.job_db or default_job_db())
    service.genievm.jobs(limit=1)  # the registry marks jobs whose process died as failed: their exports go
    cleanup_stale(root)
    repo = service.repository(repository)
    manifest = repo.find_backup(vm, backup)
    settings = service.settings.repositories[repository]
    export = Export(
        url=repo.url,
        backup=manifest,
        disks=[disk.name for disk in manifest.disks],
        folder=root,
        passphrase=service.settings.passphrase(repository),
        storage_options=settings.storage_options or None,
    )
    job = FilesJob(repo, export, action, paths, target=target)
    export.folder = root / job.id
    return job
