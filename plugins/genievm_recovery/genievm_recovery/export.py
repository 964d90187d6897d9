"""An export: one nbdkit process serving the disks of one backup, run as a job of the job registry.

Each export has a folder of its own, ``exports/<job id>/`` beside the job
registry, holding ``export.json`` (the owner's pid, the socket), nbdkit's pid
file, its default socket and, with ``writable``, the copy-on-write overlay
(nbdkit's ``cow`` filter keeps it in ``TMPDIR``, which is that folder). The
job holds the repository's shared read lock for the export's life, so garbage
collection deletes no chunk under it. Cancelling the job (``genievm jobs
cancel``), Ctrl-C or SIGTERM stop nbdkit and remove the folder; when the owner
is killed outright, nbdkit follows it (``--exit-with-parent``) and
``cleanup_stale`` removes what is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from genievm_core.engine.limits import save_limits
from genievm_core.jobs import Job
from genievm_core.logging import get_logger
from genievm_core.models.manifest import BackupManifest
from genievm_core.processes import process_alive
from genievm_core.repository import Repository
from genievm_recovery.errors import ExportError

__all__ = ["Export", "ServeJob", "cleanup_stale", "exports_root", "running"]

NBDKIT = "nbdkit"
PLUGIN = Path(__file__).with_name("nbdkit_plugin.py")  # a script for nbdkit, never imported here
START_TIMEOUT = 60.0
log = get_logger("genievm.serve")


def exports_root(job_db: Path) -> Path:
    """Where exports keep their folders: ``exports/`` beside the job registry."""
    return job_db.parent / "exports"


@dataclass
class Export:
    """What to serve and where."""

    url: str  # the repository
    backup: BackupManifest
    disks: Sequence[str]
    folder: Path
    socket: Path | None = None  # default: nbd.sock in the folder (unless ``port``)
    port: int | None = None
    writable: bool = False
    cache: int = 64 << 20
    passphrase: str | None = None
    storage_options: dict[str, Any] | None = None
    keep_overlay: Path | None = None  # with ``writable``: what was written, saved there as qcow2 at the end

    @property
    def limits_path(self) -> Path:
        """The job's bandwidth limits, which the nbdkit plugin follows (``genievm_core.engine.limits``)."""
        return self.folder / "limits.json"

    @property
    def socket_path(self) -> Path:
        return self.socket or self.folder / "nbd.sock"

    def uris(self) -> list[str]:
        """One NBD URI per disk, as qemu-img, nbdcopy and nbdinfo take them."""
        if self.port is not None:
            return [f"nbd://127.0.0.1:{self.port}/{disk}" for disk in self.disks]
        return [f"nbd+unix:///{disk}?socket={self.socket_path}" for disk in self.disks]


class ServeJob(Job):
    """Serve an export until cancelled, interrupted, or nbdkit stops."""

    kind = "serve"

    def __init__(
        self,
        repo: Repository,
        export: Export,
        *,
        on_ready: Callable[[Export], None] | None = None,
        limit_read: float | None = None,
    ) -> None:
        mode = "writable" if export.writable else "read-only"
        super().__init__(
            description=f"serve {export.backup.backup_id} {','.join(export.disks)} ({mode})",
            vm=export.backup.vm.id,
            repository=repo.url,
        )
        self.repo = repo
        self.export = export
        self.on_ready = on_ready
        self.control.limits.change(read=limit_read)

    def execute(self) -> dict[str, Any]:
        export = self.export
        with self.repo.read_lock("serve"):
            export.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            (export.folder / "export.json").write_text(
                json.dumps({"job": self.id, "pid": os.getpid(), "socket": str(export.socket_path)})
            )
            try:
                limits = self.control.limits.as_dict()
                save_limits(export.limits_path, self.control.limits)
                process = _start(export)
                try:
                    self.enter_phase("serving")
                    if self.on_ready is not None:
                        self.on_ready(export)
                    while process.poll() is None:
                        self.control.checkpoint()
                        if self.control.limits.as_dict() != limits:  # genievm jobs limit: nbdkit follows the file
                            limits = self.control.limits.as_dict()
                            save_limits(export.limits_path, self.control.limits)
                        time.sleep(0.2)
                    raise ExportError(f"export of {export.backup.backup_id}: nbdkit stopped ({_last_line(export)})")
                finally:
                    try:
                        if export.keep_overlay is not None and process.poll() is None:
                            _save_overlay(export)
                    finally:
                        _stop(process)
            finally:
                _remove(export)


def _start(export: Export, name: str = "nbdkit") -> subprocess.Popen[bytes]:
    if shutil.which(NBDKIT) is None:
        raise ExportError(f"export of {export.backup.backup_id}: nbdkit is not installed (apt-get install nbdkit "
                          "nbdkit-plugin-python)")  # fmt: skip
    pidfile = export.folder / f"{name}.pid"
    command = [NBDKIT, "-f", "--exit-with-parent", "-P", str(pidfile), "-t", "4"]
    if export.port is not None:
        command += ["-i", "127.0.0.1", "-p", str(export.port)]
    else:
        command += ["-U", str(export.socket_path)]
    command += ["--filter=cow"] if export.writable else ["-r"]
    command += [
        "python",
        str(PLUGIN),
        f"repo={export.url}",
        f"backup={export.backup.backup_id}",
        f"disks={','.join(export.disks)}",
        f"cache={export.cache}",
        f"limits={export.limits_path}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "GENIEVM_PASSPHRASE"}
    env["GENIEVM_SITE_DIRS"] = os.pathsep.join(_site_dirs())
    env["TMPDIR"] = str(export.folder)  # the cow filter's overlay
    env.setdefault("MALLOC_ARENA_MAX", "2")  # per-thread arenas would each keep freed chunk buffers
    if export.storage_options:
        env["GENIEVM_STORAGE_OPTIONS"] = json.dumps(export.storage_options)
    pass_fds: tuple[int, ...] = ()
    if export.passphrase is not None:  # through a pipe: never in argv, nor in nbdkit's environment
        read_end, write_end = os.pipe()
        os.write(write_end, export.passphrase.encode())
        os.close(write_end)
        command.append(f"passphrase_fd={read_end}")
        pass_fds = (read_end,)
    log_file = open(export.folder / f"{name}.log", "wb")  # noqa: SIM115 (closed below; nbdkit keeps its copy)
    try:
        process = subprocess.Popen(command, env=env, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=log_file)  # fmt: skip
    finally:
        log_file.close()
        for fd in pass_fds:
            os.close(fd)
    deadline = time.monotonic() + START_TIMEOUT
    while not pidfile.exists():  # nbdkit writes it once it listens
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise ExportError(f"export of {export.backup.backup_id}: nbdkit did not start ({_last_line(export)})")
        time.sleep(0.05)
    log.info("serve.started", backup=export.backup.backup_id, disks=list(export.disks), pid=process.pid)
    return process


def _save_overlay(export: Export) -> None:
    """Save what the cow filter holds as a qcow2 of the written clusters alone, with no backing file.

    nbdkit's documented way (nbdkit-cow-filter(1), NOTES): a qcow2 over the writable export,
    rebased onto the unchanged disk (a second, read-only nbdkit) keeps only the clusters
    that differ; its backing reference, an address that ends with the export, is then dropped.
    """
    assert export.keep_overlay is not None
    base = replace(export, writable=False, socket=export.folder / "base.sock", port=None, keep_overlay=None)
    partial = export.keep_overlay.with_name(export.keep_overlay.name + ".genievm-partial")
    process = _start(base, "base")
    try:
        for command in (
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", export.uris()[0], str(partial)],
            ["qemu-img", "rebase", "-q", "-f", "qcow2", "-F", "raw", "-b", base.uris()[0], str(partial)],
            ["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-b", "", str(partial)],
        ):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise ExportError(
                    f"export of {export.backup.backup_id}: cannot save the overlay to {export.keep_overlay}: "
                    f"{done.stderr.strip() or 'qemu-img failed'}"
                )
        partial.rename(export.keep_overlay)
    finally:
        partial.unlink(missing_ok=True)
        _stop(process)
    log.info("serve.overlay_kept", path=str(export.keep_overlay))


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _remove(export: Export) -> None:
    if export.socket is not None:
        export.socket.unlink(missing_ok=True)
    shutil.rmtree(export.folder, ignore_errors=True)


def _last_line(export: Export) -> str:
    try:
        lines = (export.folder / "nbdkit.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1].strip() if lines else "no message"


def _site_dirs() -> list[str]:
    """This interpreter's site-packages, for nbdkit's embedded Python (the same CPython 3.11 ABI)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"], *(p for p in sys.path if p.endswith("-packages"))]))


def cleanup_stale(root: Path) -> list[str]:
    """Remove the folders (and sockets) of exports whose owner is gone, stopping a leftover nbdkit; their job ids."""
    removed = []
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        try:
            record = json.loads((folder / "export.json").read_text())
            owner = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            record, owner = {}, 0
        if owner and process_alive(owner):
            continue
        nbdkit_pid = _read_pid(folder / "nbdkit.pid")
        if nbdkit_pid and process_alive(nbdkit_pid) and _is_nbdkit(nbdkit_pid):
            os.kill(nbdkit_pid, signal.SIGTERM)
        if record.get("socket"):
            Path(record["socket"]).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _is_nbdkit(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "nbdkit"
    except OSError:
        return False


@contextmanager
def running(export: Export, owner: str) -> Iterator[None]:
    """nbdkit serving ``export`` for the block's life, to a client in this process (``genievm files``).

    Its folder holds ``export.json`` as a serve job's does (``owner`` is the job), so ``cleanup_stale``
    removes what a killed client leaves; the folder and nbdkit go at the end.
    """
    export.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = {"job": owner, "pid": os.getpid(), "socket": str(export.socket_path)}
    (export.folder / "export.json").write_text(json.dumps(record))
    try:
        process = _start(export)
        try:
            yield
        finally:
            _stop(process)
    finally:
        _remove(export)
