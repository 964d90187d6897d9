"""Instant boot on KVM: a new libvirt VM that runs from a backup while its data is still in the repository.

An *instance* has a folder ``instant/<id>/`` beside the job registry::

    instant.json        the record: backup, VM name and UUID, libvirt URI, state, migration targets
    nbd.sock            the export (nbdkit), served by a detached process (``instant_owner``) that is
    export/             a job of kind ``instant`` in the registry and holds the repository's shared lock
    owner.json          that process's job id and pid, written once nbdkit listens
    vda.qcow2 ...       one qcow2 overlay per disk, its backing file the disk's NBD export

The VM is transient (``createXML``) while it runs on its overlays: everything the guest writes goes
into them, never into the repository. Its disks stop the VM on an I/O error (``error_policy`` and
``rerror_policy`` ``stop``) instead of failing the guest's reads if the export dies. ``finish`` moves
each disk to a permanent qcow2 file with libvirt's block copy (full, not shallow: the overlay and its
backing flattened into one file), pivots onto it, defines the VM persistently, then stops the export.
A copy that fails leaves the VM on its overlay with every write kept; ``finish`` can be run again.
States: ``starting`` (until the VM runs), ``running``, ``migrating``, ``migrated``.
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
from xml.sax.saxutils import quoteattr

import libvirt
import structlog
from genievm_kvm.connection import connect, libvirt_errors
from genievm_kvm.restore import restored_domain_xml

from genievm_core.errors import ConfigError, GenieVMError, RestoreTargetExistsError
from genievm_core.jobs import JobRegistry
from genievm_core.jobs.job import new_job_id
from genievm_core.models.manifest import BackupManifest
from genievm_core.processes import process_alive
from genievm_recovery.errors import InstantBootError

__all__ = ["Instance", "abort", "cleanup_stale", "find", "finish", "instances", "instant_root", "serve_again", "start"]

OWNER_START_TIMEOUT = 60.0
OWNER_STOP_TIMEOUT = 30.0
MAX_SOCKET_PATH = 107  # sun_path
CopyProgress = Callable[[str, int, int], None]  # disk, bytes copied, bytes to copy
log = structlog.get_logger("genievm.instant")


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
                _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", instance.export_uri(disk),
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


# finish


def finish(
    instance: Instance,
    migrate_to: Path,
    registry: JobRegistry,
    progress: CopyProgress,
    restart_export: Callable[[], None],
) -> dict[str, str]:
    """Move the running VM's disks to ``migrate_to``, define it persistently, stop the export; disk -> file.

    Run again after a failure or a kill: a disk already moved is kept, a copy still under way for the
    same file is waited for, any other is cancelled and made again. When the export is gone (its
    process died: QEMU's NBD client does not reconnect), ``restart_export`` serves the backup again
    and the disks move offline: the VM is powered off (what the guest wrote is in its overlays),
    each overlay with its backing is converted into its file, and the VM starts again on them.
    """
    if instance.state == "starting":
        raise InstantBootError(f"instant {instance.id}: VM {instance.name} has not started")
    if instance.state != "migrated":
        migrate_to = migrate_to.absolute()
        migrate_to.mkdir(parents=True, exist_ok=True)
        instance.migrate_to = str(migrate_to)
        instance.state = "migrating"
        instance.save()
        targets = {disk: migrate_to / f"{instance.name}-{disk}.qcow2" for disk in instance.disks}
        if not instance.serving():
            _stop_owner(instance, None)  # an nbdkit left behind, still holding QEMU's connection
            instance.socket.unlink(missing_ok=True)
            restart_export()
            _move_offline(instance, targets, progress)
        else:
            with _domain(instance) as (conn, dom):
                if dom is None:
                    raise InstantBootError(f"instant {instance.id}: VM {instance.name} is gone; genievm instant "
                                           f"abort {instance.id} removes what is left")  # fmt: skip
                for disk, target in targets.items():
                    _move_disk(instance, dom, disk, target, progress)
                with libvirt_errors(f"instant {instance.id}: defining VM {instance.name}"):
                    conn.defineXML(_without_stop_policies(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)))
        instance.state = "migrated"
        instance.save()
    _stop_owner(instance, registry)
    moved = dict(instance.targets)
    shutil.rmtree(instance.folder, ignore_errors=True)
    return moved


def _move_offline(instance: Instance, targets: Mapping[str, Path], progress: CopyProgress) -> None:
    with _domain(instance) as (conn, dom):
        if dom is not None and dom.isActive():
            with libvirt_errors(f"instant {instance.id}: powering off VM {instance.name}"):
                dom.destroy()
        for disk, target in targets.items():
            _claim(instance, disk, target)
            partial = target.with_name(target.name + ".genievm-partial")
            _run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(instance.overlay(disk)), str(partial)],
                 f"instant {instance.id}: copying {disk} to {target}")  # fmt: skip
            partial.rename(target)
            size = target.stat().st_size
            progress(disk, size, size)
        xml = restored_domain_xml((instance.folder / "domain.xml").read_text(), instance.name,
                                  {disk: (target, "qcow2") for disk, target in targets.items()})  # fmt: skip
        with libvirt_errors(f"instant {instance.id}: defining and starting VM {instance.name}"):
            dom = conn.defineXML(xml)
            dom.create()
        instance.uuid = str(dom.UUIDString())


def _claim(instance: Instance, disk: str, target: Path) -> None:
    """Make ``target`` this instance's copy of ``disk``: a file of an earlier run of it is removed, any other
    file is never overwritten."""
    if target.exists():
        if instance.targets.get(disk) != str(target):
            raise RestoreTargetExistsError(f"{target} exists; remove it or choose another --migrate-to")
        target.unlink()  # the partial copy of an earlier run
    instance.targets[disk] = str(target)
    instance.save()


def _move_disk(instance: Instance, dom: libvirt.virDomain, disk: str, target: Path, progress: CopyProgress) -> None:
    if _disk_source(dom, disk) == str(target):
        return  # moved by an earlier run
    job = _job_info(dom, disk)
    if job and _mirror_target(dom, disk) != str(target):
        with libvirt_errors(f"instant {instance.id}: cancelling the earlier copy of {disk}"):
            dom.blockJobAbort(disk, 0)
        _wait(lambda: not _job_info(dom, disk))
        job = {}
    if not job:
        if not instance.serving():
            raise InstantBootError(
                f"instant {instance.id}: its export is gone (its process died), so {disk} cannot be copied; "
                f"the VM keeps its writes in {instance.overlay(disk)}"
            )
        _claim(instance, disk, target)
        dest = f"<disk type='file'><driver type='qcow2'/><source file={quoteattr(str(target))}/></disk>"
        with libvirt_errors(f"instant {instance.id}: copying {disk} to {target}"):
            dom.blockCopy(disk, dest, None, 0)  # the whole chain into one file: not shallow
    while True:
        info = _job_info(dom, disk)
        if not info:
            reason = _copy_failure(target)
            target.unlink(missing_ok=True)
            raise InstantBootError(
                f"instant {instance.id}: the copy of {disk} to {target} failed ({reason}); "
                f"VM {instance.name} runs on, its writes kept; run genievm instant finish {instance.id} again"
            )
        progress(disk, int(info["cur"]), int(info["end"]))
        if info["end"] and info["cur"] == info["end"]:  # libvirt reports cur == end only once it is ready
            break
        time.sleep(0.2)
    with libvirt_errors(f"instant {instance.id}: switching {disk} to {target}"):
        dom.blockJobAbort(disk, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)


def _copy_failure(target: Path) -> str:
    try:
        if shutil.disk_usage(target.parent).free < 1 << 20:
            return f"no space left on {target.parent}"
    except OSError:
        pass
    return "QEMU stopped the block copy; libvirt's log of the VM says why"


def _job_info(dom: libvirt.virDomain, disk: str) -> dict[str, int]:
    with libvirt_errors(f"VM {dom.name()}: block job of {disk}"):
        return dict(dom.blockJobInfo(disk, 0) or {})


def _disk_element(dom: libvirt.virDomain, disk: str) -> ET.Element | None:
    for element in ET.fromstring(dom.XMLDesc(0)).iterfind("devices/disk"):
        target = element.find("target")
        if target is not None and target.get("dev") == disk:
            return element
    return None


def _disk_source(dom: libvirt.virDomain, disk: str) -> str | None:
    element = _disk_element(dom, disk)
    source = element.find("source") if element is not None else None
    return source.get("file") if source is not None else None


def _mirror_target(dom: libvirt.virDomain, disk: str) -> str | None:
    element = _disk_element(dom, disk)
    source = element.find("mirror/source") if element is not None else None
    return source.get("file") if source is not None else None


def _without_stop_policies(xml: str) -> str:
    root = ET.fromstring(xml)
    for driver in root.iterfind("devices/disk/driver"):
        driver.attrib.pop("error_policy", None)
        driver.attrib.pop("rerror_policy", None)
    return ET.tostring(root, encoding="unicode")


# abort and cleanup


def abort(instance: Instance, registry: JobRegistry | None) -> None:
    """Destroy the instant VM and remove its overlays, export, socket, record and unfinished copies."""
    if instance.state == "migrated":
        raise InstantBootError(f"instant {instance.id}: VM {instance.name} was moved to its own disks already; "
                               f"genievm instant finish {instance.id} ends it")  # fmt: skip
    with _domain(instance) as (_conn, dom):
        if dom is not None:
            with libvirt_errors(f"instant {instance.id}: destroying VM {instance.name}"):
                dom.destroy()  # transient: gone with it
    _stop_owner(instance, registry)
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


def _stop_owner(instance: Instance, registry: JobRegistry | None) -> None:
    """Stop the export's process, through the registry when it can; then any nbdkit it left behind (one
    whose owner was killed does not exit while a client is connected)."""
    job, pid = instance.owner()
    if process_alive(pid):
        _stop_process(pid, job, registry)
    nbdkit = _read_pid(instance.folder / "export" / "nbdkit.pid")
    if process_alive(nbdkit) and _command_name(nbdkit) == "nbdkit":
        os.kill(nbdkit, signal.SIGKILL)
        _wait(lambda: not process_alive(nbdkit))
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
    if not _wait(lambda: not process_alive(pid), OWNER_STOP_TIMEOUT):
        os.kill(pid, signal.SIGKILL)


@contextmanager
def _domain(instance: Instance) -> Iterator[tuple[libvirt.virConnect, libvirt.virDomain | None]]:
    """The instance's VM: by its UUID, or (killed before the UUID was saved) by name when its disks are ours."""
    conn = connect(instance.uri)
    try:
        dom = None
        if instance.uuid:
            dom = _lookup(conn, instance.uuid, by_uuid=True)
        else:
            candidate = _lookup(conn, instance.name)
            if candidate is not None and _disk_source(candidate, instance.disks[0]) == str(
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


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise InstantBootError(f"{what}: {done.stderr.strip() or 'failed'}")


def _wait(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
