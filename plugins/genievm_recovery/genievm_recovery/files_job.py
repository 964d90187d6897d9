"""``genievm files`` as a job: serve the backup's disks (nbdkit, a private socket), boot libguestfs over them,
mount the filesystem, then list, find or extract.

The job (kind ``files``) holds the repository's shared lock while it runs, so
garbage collection deletes no chunk it reads; its export lives in
``exports/<job id>/`` as a ``genievm serve``'s does, and goes when it ends
(``cleanup_stale`` removes it after a kill). Its phases (``serve``,
``launch``, ``mount``, then ``ls``, ``find`` or ``get``) are in the registry;
``get`` reports its bytes as the progress of one "disk" named after the
target folder, and stops between files when cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genievm_core.engine import DiskProgress
from genievm_core.jobs import Job
from genievm_core.repository import Repository
from genievm_recovery.export import Export, running
from genievm_recovery.extract import TargetTree
from genievm_recovery.guest_files import Entry, GuestFiles, guest_path

__all__ = ["FilesJob"]


class FilesJob(Job):
    """One ``files`` command over one backup; ``output`` holds what it found (``ls``: entries, ``find``: paths)."""

    kind = "files"

    def __init__(
        self,
        repo: Repository,
        export: Export,
        action: str,
        paths: Sequence[str],
        *,
        filesystem: str | None = None,
        pattern: str | None = None,
        target: Path | None = None,
    ) -> None:
        shown = pattern if action == "find" else " ".join(paths)
        super().__init__(
            description=f"files {action} {shown} of {export.backup.backup_id}",
            vm=export.backup.vm.id,
            repository=repo.url,
        )
        self.repo = repo
        self.export = export
        self.action = action
        self.paths = list(paths)
        self.filesystem = filesystem
        self.pattern = pattern
        self.target = target
        self.entries: list[Entry] = []
        self.found: list[str] = []

    def execute(self) -> dict[str, Any]:
        export = self.export
        self.enter_phase("serve")
        with self.repo.read_lock("files"), running(export, self.id):
            guest = GuestFiles(export.backup.backup_id, export.socket_path, export.disks)
            self.enter_phase("launch")
            guest.launch()
            try:
                self.control.checkpoint()
                self.enter_phase("mount")
                mounted = guest.mount(self.filesystem)
                self.enter_phase(self.action)
                summary: dict[str, Any] = {"backup": export.backup.backup_id, "filesystem": mounted}
                return summary | self._act(guest)
            finally:
                guest.close()

    def _act(self, guest: GuestFiles) -> dict[str, Any]:
        if self.action == "ls":
            self.entries = guest.ls(self.paths[0])
            return {"path": guest_path(self.paths[0]), "entries": len(self.entries)}
        if self.action == "find":
            assert self.pattern is not None
            self.found = guest.find(self.pattern, self.paths[0])
            return {"under": guest_path(self.paths[0]), "pattern": self.pattern, "found": len(self.found)}
        assert self.target is not None
        tree = TargetTree(self.target)
        progress = DiskProgress(disk=self.target.name or str(self.target), total=guest.total_size(self.paths))

        def report(written: int) -> None:
            progress.scanned = progress.read = min(written, progress.total) if progress.total else written
            self.on_progress(progress)
            self.control.checkpoint()

        guest.get(self.paths, tree, report)
        progress.done = True
        self.on_progress(progress)
        counts = {"files": tree.files, "folders": tree.folders, "links": tree.links, "skipped": tree.skipped}
        return {"paths": [guest_path(p) for p in self.paths], "to": str(self.target), **counts, "bytes": tree.written}
