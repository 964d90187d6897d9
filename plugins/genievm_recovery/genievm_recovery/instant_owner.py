"""The process that keeps an instant VM's export alive: run detached by ``genievm instant start``, as

    python -m genievm_recovery.instant_owner FOLDER [PASSPHRASE_FD]

It reads ``FOLDER/owner-request.json`` (repository, backup, disks, cache, storage options), the
passphrase from the pipe ``PASSPHRASE_FD`` (never from argv or the environment), then runs an
``InstantExportJob``: nbdkit on ``FOLDER/nbd.sock`` under the repository's shared lock, a job of
kind ``instant`` in the job registry, until cancelled (``instant finish`` and ``instant abort``
do that through the registry) or SIGTERM. Once nbdkit listens it writes ``FOLDER/owner.json``
(its job id and pid). nbdkit exits with it (``--exit-with-parent``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from genievm_core.api import GenieVM
from genievm_core.choices import LogFormat
from genievm_core.errors import GenieVMError, JobCancelledError, JobInterruptedError
from genievm_core.interrupts import interrupt
from genievm_core.jobs import default_job_db
from genievm_core.logging import configure_logging
from genievm_core.repository import Repository
from genievm_recovery.export import Export, ServeJob

__all__ = ["InstantExportJob", "main"]


class InstantExportJob(ServeJob):
    """The export under an instant VM; it succeeds when cancelled after the VM's disks were moved."""

    kind = "instant"

    def __init__(self, repo: Repository, export: Export, folder: Path) -> None:
        super().__init__(repo, export, on_ready=self._ready)
        self.folder = folder
        self.description = f"instant boot {folder.name}: {self.description}"

    def _ready(self, export: Export) -> None:
        record = {"job": self.id, "pid": os.getpid(), "socket": str(export.socket_path)}
        partial = self.folder / "owner.json.partial"
        partial.write_text(json.dumps(record))
        partial.rename(self.folder / "owner.json")

    def execute(self) -> dict[str, Any]:
        try:
            return super().execute()
        except JobCancelledError:
            record = json.loads((self.folder / "instant.json").read_text())
            if record.get("state") != "migrated":
                raise
            return {"instant": self.folder.name, "vm": record["name"], "disks": record["targets"]}


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    request = json.loads((folder / "owner-request.json").read_text())
    passphrase = None
    if len(argv) > 1:
        with os.fdopen(int(argv[1]), "r", encoding="utf-8") as pipe:
            passphrase = pipe.read()
    configure_logging(os.environ.get("GENIEVM_LOG_LEVEL", "warning"), LogFormat(os.environ.get("GENIEVM_LOG_FORMAT",
                      "console")))  # into owner.log; the variables are those of every genievm command  # fmt: skip
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # detached: a Ctrl-C in the starting terminal is not for it
    options = request.get("storage_options") or {}
    try:
        with GenieVM(job_db=default_job_db(), storage_options=options) as genievm:
            repo = genievm.open_repository(request["repo"], passphrase=passphrase)
            export = Export(
                url=repo.url,
                backup=repo.find_backup(None, request["backup"]),
                disks=request["disks"],
                folder=folder / "export",
                socket=folder / "nbd.sock",
                cache=int(request["cache"]),
                passphrase=passphrase,
                storage_options=options or None,
            )
            genievm.run(InstantExportJob(repo, export, folder))
    except (JobCancelledError, JobInterruptedError):
        return 0
    except GenieVMError as exc:
        print(f"genievm instant export: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
