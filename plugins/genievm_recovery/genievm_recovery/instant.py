"""Instant boot on KVM: a new libvirt VM that runs from a backup while its data is still in the repository.

An *instance* has a folder ``instant/<id>/`` beside the job registry::

    instant.json        the record: backup, VM name and UUID, libvirt URI, state, migration targets
    nbd.sock            the export (nbdkit), served by a detached process (``instant_owner``) that is
    export/             a job of kind ``instant`` in the registry and holds the repository's shared lock
    owner.json          that process's job id and pid, written once nbdkit listens
    vda.qcow2 ...       one qcow2 overlay per disk, its backing file the disk's NBD export

The VM is transient (``createXML``) while it runs on its overlays: everything the guest writes goes
into them, never into the repository. Its disks stop the VM on an I/O error (``error_policy`` and
``rerror_policy`` ``stop``) instead of failing the guest's reads if the export dies. ``finish``
(``migrate.py``) moves it to its own disks, then stops the export. States: ``starting`` (until the
VM runs), ``running``, ``migrating``, ``migrated``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import libvirt
from genievm_kvm.connection import connect, libvirt_errors
from genievm_kvm.restore import restored_domain_xml

from genievm_core.errors import ConfigError, GenieVMError, RestoreTargetExistsError
from genievm_core.jobs import JobRegistry
from genievm_core.jobs.job import new_job_id
from genievm_core.logging import get_logger
from genievm_core.models.manifest import BackupManifest
from genievm_core.processes import process_alive
from genievm_recovery.errors import InstantBootError

__all__ = [
    "Instance",
    "abort",
    "cleanup_stale",
    "disk_source",
    "domain_of",
    "find",
    "instances",
    "instant_root",
    "run_tool",
    "serve_again",
    "start",
    "stop_export",
    "wait_until",
]

OWNER_START_TIMEOUT = 60.0
OWNER_STOP_TIMEOUT = 30.0
MAX_SOCKET_PATH = 107  # sun_path
log = get_logger("genievm.instant")


def instant_root(job_db: Path) -> Path:
    """Where instances keep their folders: ``instant/`` beside the job registry."""
    return job_db.parent / "instant"


@dataclass
class Instance:
    """The record of one instant VM (``instant.json``)."""

    id: str
    folder: Path
    repo: str
    backup: str
    vm: str  # the backed-up VM
    name: str  # the new VM's
    uri: str
    disks: list[str]
    state: str = "starting"
    starter_pid: int = 0  # the `instant start` that made it, while it is starting
    uuid: str | None = None
    migrate_to: str | None = None
    targets: dict[str, str] = field(default_factory=dict)  # disk -> permanent file (a copy under way or done)

    @property
    def socket(self) -> Path:
        return self.folder / "nbd.sock"

    def overlay(self, disk: str) -> Path:
        return self.folder / f"{disk}.qcow2"

    def export_uri(self, disk: str) -> str:
        return f"nbd+unix:///{disk}?socket={self.socket}"

    def owner(self) -> tuple[str | None, int]:
        """The export's job id and process id (None, 0 before it listens)."""
        try:
            record = json.loads((self.folder / "owner.json").read_text())
            return str(record["job"]), int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, 0

    def serving(self) -> bool:
        _job, pid = self.owner()
        return process_alive(pid)

    def save(self) -> None:
        data = asdict(self)
        data["folder"] = str(self.folder)
        partial = self.folder / "instant.json.partial"
        partial.write_text(json.dumps(data, indent=1))
        partial.rename(self.folder / "instant.json")

    @classmethod
    def load(cls, folder: Path) -> Instance:
        data = json.loads((folder / "instant.json").read_text())
        data["folder"] = folder
        return cls(**data)


def instances(root: Path) -> list[Instance]:
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            found.append(Instance.load(folder))
        except (OSError, ValueError, TypeError):
            continue  # a folder whose record was never written: cleanup_stale removes it
    return found


def find(root: Path, instance_id: str) -> Instance:
    """An instance by its id, or by the job id of its export."""
    for instance in instances(root):
        if instance_id in (instance.id, instance.owner()[0]):
            return instance
    raise InstantBootError(f"instant {instance_id}: no such instant VM (genievm instant list shows them)")


# start


def start(
    job_db: Path,
    manifest: BackupManifest,
    *,
    repo_url: str,
    name: str,
    uri: str,
    cache: int,
    passphrase: str | None,
    storage_options: Mapping[str, Any] | None,
) -> Instance:
    """Serve the backup, make the overlays, define and start the VM ``name``; the running instance."""
    _local_only(uri)
    if manifest.vm.config_format != "libvirt-domain-xml" or not manifest.vm.config:
        raise InstantBootError(
            f"instant boot of {manifest.backup_id}: not a KVM backup (its VM configuration is "
            f"{manifest.vm.config_format or 'absent'}); instant boot needs the libvirt domain of a kvm backup"
        )
    conn = connect(uri)
    try:
        if _lookup(conn, name) is not None:
            raise RestoreTargetExistsError(f"VM {name} exists; give the instant VM another --new-name")
        instance_id = new_job_id()
        folder = instant_root(job_db) / instance_id
        if len(str(folder / "nbd.sock")) > MAX_SOCKET_PATH:
            raise ConfigError(f"invalid configuration: the export's socket {folder / 'nbd.sock'} is too long for "
                              "a unix socket; put the job registry (GENIEVM_JOB_DB) on a shorter path")  # fmt: skip
        folder.mkdir(parents=True, mode=0o711)  # QEMU, whatever its user, reaches the overlays and socket
        instance = Instance(instance_id, folder, repo_url, manifest.backup_id, manifest.vm.id, name, uri,
                            [d.name for d in manifest.disks], starter_pid=os.getpid())  # fmt: skip
        instance.save()
        try:
            _spawn_owner(instance, job_db, cache, passphrase, storage_options)
            log.info("instant.serving", instant=instance_id, socket=str(instance.socket))
            for disk in instance.disks:
                run_tool(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", instance.export_uri(disk),
                      str(instance.overlay(disk))], f"instant {instance_id}: overlay of {disk}")  # fmt: skip
            xml = restored_domain_xml(
                base64.b64decode(manifest.vm.config).decode(),
                name,
                {disk: (instance.overlay(disk), "qcow2") for disk in instance.disks},
            )
            (folder / "domain.xml").write_text(xml)  # what an offline finish defines the VM from
            log.info("instant.overlays_made", instant=instance_id, disks=instance.disks)
            with libvirt_errors(f"instant {instance_id}: starting VM {name}"):
                dom = conn.createXML(_stop_on_io_errors(xml), 0)
        except BaseException:
            abort(instance, None)  # nothing ran in the VM yet: nothing to keep
            raise
        instance.uuid = str(dom.UUIDString())
        log.info("instant.vm_started", instant=instance_id, vm=name, uuid=instance.uuid)
        instance.state = "running"
        instance.starter_pid = 0
        instance.save()
        return instance
    finally:
        conn.close()


def _stop_on_io_errors(xml: str) -> str:
    """Pause the VM, keeping its writes, when a disk read or write fails (the export died), instead of
    passing the error to the guest."""
    root = ET.fromstring(xml)
    for driver in root.iterfind("devices/disk/driver"):
        driver.set("error_policy", "stop")
        driver.set("rerror_policy", "stop")
    return ET.tostring(root, encoding="unicode")


def serve_again(instance: Instance, job_db: Path, passphrase: str | None) -> None:
    """Start the instance's export again (its process died), on the same socket."""
    request = json.loads((instance.folder / "owner-request.json").read_text())
    _spawn_owner(instance, job_db, int(request["cache"]), passphrase, request.get("storage_options"))


def _spawn_owner(
    instance: Instance, job_db: Path, cache: int, passphrase: str | None, storage_options: Mapping[str, Any] | None
) -> None:
    request = {"repo": instance.repo, "backup": instance.backup, "disks": instance.disks, "cache": cache,
               "storage_options": dict(storage_options or {})}  # fmt: skip
    (instance.folder / "owner-request.json").write_text(json.dumps(request))
    command = [sys.executable, "-m", "genievm_recovery.instant_owner", str(instance.folder)]
    pass_fds: tuple[int, ...] = ()
    if passphrase is not None:  # through a pipe, never in argv or the environment
        read_end, write_end = os.pipe()
        os.write(write_end, passphrase.encode())
        os.close(write_end)
        command.append(str(read_end))
        pass_fds = (read_end,)
    env = {k: v for k, v in os.environ.items() if k != "GENIEVM_PASSPHRASE"}
    env["GENIEVM_JOB_DB"] = str(job_db)
    with open(instance.folder / "owner.log", "ab") as log_file:
        process = subprocess.Popen(command, env=env, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=log_file, start_new_session=True)  # fmt: skip
    for fd in pass_fds:
        os.close(fd)
    deadline = time.monotonic() + OWNER_START_TIMEOUT
    while instance.owner()[1] != process.pid:
        if process.poll() is not None or time.monotonic() > deadline:
            raise InstantBootError(f"instant {instance.id}: the export did not start ({_last_line(instance)})")
        time.sleep(0.05)


def _last_line(instance: Instance) -> str:
    try:
        lines = (instance.folder / "owner.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1].strip() if lines else "no message"


def disk_element(dom: libvirt.virDomain, disk: str) -> ET.Element | None:
    for element in ET.fromstring(dom.XMLDesc(0)).iterfind("devices/disk"):
        target = element.find("target")
        if target is not None and target.get("dev") == disk:
            return element
    return None


def disk_source(dom: libvirt.virDomain, disk: str) -> str | None:
    element = disk_element(dom, disk)
    source = element.find("source") if element is not None else None
    return source.get("file") if source is not None else None



# abort and cleanup


def abort(instance: Instance, registry: JobRegistry | None) -> None:
    """Destroy the instant VM and remove its overlays, export, socket, record and unfinished copies."""
    if instance.state == "migrated":
        raise InstantBootError(f"instant {instance.id}: VM {instance.name} was moved to its own disks already; "
                               f"genievm instant finish {instance.id} ends it")  # fmt: skip
    with domain_of(instance) as (_conn, dom):
        if dom is not None:
            with libvirt_errors(f"instant {instance.id}: destroying VM {instance.name}"):
                dom.destroy()  # transient: gone with it
    stop_export(instance, registry)
    for target in instance.targets.values():
        Path(target).unlink(missing_ok=True)
    shutil.rmtree(instance.folder, ignore_errors=True)


def cleanup_stale(root: Path) -> list[str]:
    """Remove the instances whose ``instant start`` died before the VM ran (and folders without a record)."""
    removed = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            instance = Instance.load(folder)
        except (OSError, ValueError, TypeError):
            if time.time() - folder.stat().st_mtime > OWNER_START_TIMEOUT:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
            continue
        if instance.state == "starting" and not process_alive(instance.starter_pid):
            try:
                abort(instance, None)
            except GenieVMError:
                continue  # libvirt unreachable now: the next run tries again
            removed.append(instance.id)
    return removed


def stop_export(instance: Instance, registry: JobRegistry | None) -> None:
    """Stop the export's process, through the registry when it can; then any nbdkit it left behind (one
    whose owner was killed does not exit while a client is connected)."""
    job, pid = instance.owner()
    if process_alive(pid):
        _stop_process(pid, job, registry)
    nbdkit = _read_pid(instance.folder / "export" / "nbdkit.pid")
    if process_alive(nbdkit) and _command_name(nbdkit) == "nbdkit":
        os.kill(nbdkit, signal.SIGKILL)
        wait_until(lambda: not process_alive(nbdkit))
    shutil.rmtree(instance.folder / "export", ignore_errors=True)  # its stale pid file would pass for a new one


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _stop_process(pid: int, job: str | None, registry: JobRegistry | None) -> None:
    if registry is not None and job is not None:
        try:
            registry.request(job, "cancel")
        except GenieVMError:
            os.kill(pid, signal.SIGTERM)
    else:
        os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not process_alive(pid), OWNER_STOP_TIMEOUT):
        os.kill(pid, signal.SIGKILL)


@contextmanager
def domain_of(instance: Instance) -> Iterator[tuple[libvirt.virConnect, libvirt.virDomain | None]]:
    """The instance's VM: by its UUID, or (killed before the UUID was saved) by name when its disks are ours."""
    conn = connect(instance.uri)
    try:
        dom = None
        if instance.uuid:
            dom = _lookup(conn, instance.uuid, by_uuid=True)
        else:
            candidate = _lookup(conn, instance.name)
            if candidate is not None and disk_source(candidate, instance.disks[0]) == str(
                instance.overlay(instance.disks[0])
            ):
                dom = candidate
        yield conn, dom
    finally:
        conn.close()


def _lookup(conn: libvirt.virConnect, key: str, *, by_uuid: bool = False) -> libvirt.virDomain | None:
    try:
        return conn.lookupByUUIDString(key) if by_uuid else conn.lookupByName(key)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        with libvirt_errors(f"looking up VM {key}"):
            raise


def _local_only(uri: str) -> None:
    scheme, _, rest = uri.partition("://")
    if "+" in scheme or not rest.startswith("/"):
        raise ConfigError(f"invalid configuration: --uri: {uri} is not local; instant boot serves the backup "
                          "on this host's unix socket: run GenieVM on the VM's host")  # fmt: skip


def run_tool(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise InstantBootError(f"{what}: {done.stderr.strip() or 'failed'}")


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
