"""Backups of running (or paused) VMs through libvirt's backup API in pull mode.

``backupBegin`` fixes the point in time for every disk at once and serves each disk as an
NBD export on a unix socket; reads go through libnbd. A full backup reads the extents of
``base:allocation``; an incremental reads the dirty bitmap of the checkpoint named in the
parent's token. The job is always aborted and its socket and scratch files removed, on
success, error and cancel alike. A new checkpoint is kept only when the backup succeeded;
then the older checkpoints of the same repository are deleted.
"""

from __future__ import annotations

import os
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import libvirt

from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger
from genievm_core.models.extents import Extent
from genievm_core.models.vm import VMDescription
from genievm_core.plugin.options import parse_options
from genievm_core.plugin.protocols import BackupRequest
from genievm_core.processes import process_alive
from genievm_kvm.chain import CHECKPOINT_SOURCE, chain_prefix, new_checkpoint_name
from genievm_kvm.connection import libvirt_errors, raise_for
from genievm_kvm.domain import disk_specs
from genievm_kvm.errors import TransportSecurityError
from genievm_kvm.nbd_export import ALLOCATION, READERS, Address, NBDClient
from genievm_kvm.options import KVMOptions
from genievm_kvm.quiesce import frozen
from genievm_kvm.source import Changes, NBDDiskSource, Session

__all__ = ["JobPlace", "abort_stale_job", "checkpoint_changes", "job_place", "live_backup", "run_dir"]

log = get_logger("genievm.kvm.live")
SOURCE = CHECKPOINT_SOURCE


@dataclass(frozen=True)
class JobPlace:
    """Where a backup job serves its exports and keeps its scratch files.

    On this host: a unix socket in ``run_dir``. On a remote host (a ``qemu+ssh://`` URI): TCP
    on ``remote_host:nbd_port``, with TLS unless ``tls_dir`` is None (``nbdTls=false``): libvirt
    takes the server's certificates from its ``backup_tls_x509_cert_dir``, this host the CA and
    client certificates from ``tls_dir``. Scratch files (what the guest overwrites during the backup)
    go to ``scratch_dir`` on the VM's host, a disk rather than ``/run``'s memory; libvirt
    creates them and removes them when the job ends.
    """

    run_dir: Path
    remote_host: str | None = None
    nbd_port: int = 10809
    scratch_dir: Path = Path("/var/tmp")
    tls_dir: Path | None = None

    def server(self, tag: str) -> tuple[dict[str, str], Address, list[Path]]:
        """The ``<server>`` attributes, the address to connect to, and files to remove after."""
        if self.remote_host:
            attrs = {"transport": "tcp", "name": self.remote_host, "port": str(self.nbd_port)}
            if self.tls_dir is not None:
                check_tls_dir(self.tls_dir, self.remote_host)
                attrs["tls"] = "yes"
            return attrs, (self.remote_host, self.nbd_port), []
        socket = self.run_dir / f"{tag}.sock"
        return {"transport": "unix", "socket": str(socket)}, socket, [socket]

    def scratch(self, tag: str, disks: list[str]) -> dict[str, Path]:
        return {d: self.scratch_dir / f"genievm-{tag}.{d}.scratch" for d in disks}

    def local_files(self, scratch: dict[str, Path]) -> list[Path]:
        return [] if self.remote_host else list(scratch.values())

    @contextmanager
    def owning(self, dom: libvirt.virDomain) -> Iterator[None]:
        """Claim the VM's one backup job for this process, for the block.

        A job left by a GenieVM process that is gone is aborted; one whose process still runs
        (another backup of the same VM, into another repository perhaps) is left alone.
        """
        owner = self.run_dir / f"{dom.UUIDString()}.owner"
        try:
            fd = os.open(owner, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pid = _pid_in(owner)
            if pid and process_alive(pid):
                raise ProviderError(
                    f"provider kvm: VM {dom.name()} is being backed up by another GenieVM process (pid {pid})"
                ) from None
            owner.unlink(missing_ok=True)  # its process is gone
            fd = os.open(owner, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            abort_stale_job(dom, self)
            yield
        finally:
            owner.unlink(missing_ok=True)

    def owns(self, server: ET.Element | None) -> bool:
        """Whether a backup job's ``<server>`` is where GenieVM puts its own."""
        if server is None:
            return False
        if self.remote_host:
            return server.get("transport") == "tcp" and server.get("port") == str(self.nbd_port)
        return Path(server.get("socket", "")).parent == self.run_dir


def job_place(uri: str, options: KVMOptions | Mapping[str, Any]) -> JobPlace:
    """Where backup jobs of ``uri`` serve NBD: a local socket, or TCP on the remote host.

    ``options`` as checked, or as given (cbt.py passes ``{}``: the defaults).
    """
    if not isinstance(options, KVMOptions):
        options = parse_options(KVMOptions, options, "providerOptions")
    host = urlparse(uri).hostname
    remote = (options.nbd_host or host) if host else None
    tls_dir = options.tls_dir if remote and options.nbd_tls else None
    return JobPlace(run_dir(options.run_dir), remote, options.nbd_port, options.scratch_dir, tls_dir)


TLS_FILES = ("ca-cert.pem", "client-cert.pem", "client-key.pem")


def check_tls_dir(folder: Path, host: str) -> None:
    """``folder`` holds what libnbd needs for NBD over TLS, or a ``TransportSecurityError`` says what is missing."""
    missing = [name for name in TLS_FILES if not os.access(folder / name, os.R_OK)]
    if missing:
        raise TransportSecurityError(
            f"provider kvm: NBD over TLS to {host}: no readable {', '.join(missing)} in {folder} "
            "(give -o tlsDir=PATH with the CA and client certificates, or -o nbdTls=false on a trusted network)"
        )


def run_dir(configured: Path | None) -> Path:
    """Where NBD sockets and scratch files go: short paths, since a unix socket path has 107 bytes at most."""
    if configured:
        folder = configured
    elif os.geteuid() == 0:
        folder = Path("/run/genievm")
    else:
        folder = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/genievm-{os.geteuid()}")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


@contextmanager
def live_backup(
    dom: libvirt.virDomain, vm: VMDescription, request: BackupRequest, place: JobPlace
) -> Iterator[Session]:
    disks = [d for d in vm.disks if d.name in request.disks]
    prefix = chain_prefix(request.chain_id)
    with libvirt_errors(f"VM {vm.name}: listing checkpoints"):
        existing = {cp.getName(): cp for cp in dom.listAllCheckpoints()}
    capable = {d.name for d in disks if d.format == "qcow2"} if request.enable_cbt else set()
    new_cp = new_checkpoint_name(request.chain_id) if capable else None
    changes = {d.name: _changes(d.name, d.format, request, prefix, existing, new_cp) for d in disks}
    tag = secrets.token_hex(4)
    server, address, files = place.server(tag)
    scratch = place.scratch(tag, [d.name for d in disks])
    kept = False

    def drop_new_checkpoint() -> None:
        if new_cp and not kept:  # the backup failed: its checkpoint would name data no backup holds
            _delete_checkpoints(dom, [new_cp])

    with ExitStack() as cleanup:  # on exit, in reverse: close NBD, abort the job, drop checkpoint, remove files
        cleanup.enter_context(place.owning(dom))
        cleanup.callback(_remove_files, [*files, *place.local_files(scratch)])
        changes = _begin(dom, vm, request, server, scratch, changes, new_cp, capable)
        cleanup.callback(drop_new_checkpoint)
        cleanup.callback(_abort, dom)
        exports = _exports(dom)
        changes = {n: _with_context(n, c, exports[n][1]) for n, c in changes.items()}
        session = Session({})
        cleanup.callback(session.close)
        for d in disks:
            session.add(
                d.name,
                NBDDiskSource(d, _client(address, exports[d.name][0], changes[d.name], place.tls_dir), changes[d.name]),
            )
        yield session
        kept = True
    if new_cp:
        _delete_checkpoints(dom, [n for n in existing if n.startswith(prefix) and n != new_cp])


def checkpoint_changes(dom: libvirt.virDomain, disk: str, token: str, place: JobPlace) -> list[Extent]:
    """The extents of ``disk`` written since checkpoint ``token``, from a short backup job of that disk alone.

    The job creates no checkpoint and reads no data: it exists only to export the dirty bitmap.
    """
    tag = secrets.token_hex(4)
    server, address, files = place.server(tag)
    scratch = place.scratch(tag, [disk])
    all_disks = [s.target for s in disk_specs(dom.XMLDesc(0))]
    with ExitStack() as cleanup:
        cleanup.enter_context(place.owning(dom))
        cleanup.callback(_remove_files, [*files, *place.local_files(scratch)])
        with libvirt_errors(f"VM {dom.name()}: reading checkpoint {token}"):
            dom.backupBegin(_backup_xml(server, all_disks, scratch, {disk: Changes(base=token)}), None)
        cleanup.callback(_abort, dom)
        changes = _with_context(disk, Changes(base=token), _exports(dom)[disk][1])
        client = _client(address, _exports(dom)[disk][0], changes, place.tls_dir)
        cleanup.callback(client.close)
        return client.dirty(changes.context or "")


def _changes(
    disk: str,
    fmt: str,
    request: BackupRequest,
    prefix: str,
    existing: dict[str, libvirt.virDomainCheckpoint],
    new_cp: str | None,
) -> Changes:
    token = request.tokens.get(disk)
    next_token = new_cp if fmt == "qcow2" else None
    if not request.enable_cbt:
        return Changes(reason="CBT disabled by enableCBT", next_token=None)
    if fmt != "qcow2":
        return Changes(reason=f"a {fmt} disk has no dirty bitmaps", next_token=None)
    if not token:
        return Changes(reason="the parent backup has no checkpoint for this disk", next_token=next_token)
    if not token.startswith(prefix):
        return Changes(reason=f"checkpoint {token} belongs to another repository", next_token=next_token)
    if token not in existing:
        reason = f"checkpoint {token} is not on the VM (deleted, VM recreated or last backed up while stopped)"
        return Changes(reason=reason, next_token=next_token)
    in_checkpoint = {
        d.get("name"): d.get("checkpoint") for d in ET.fromstring(existing[token].getXMLDesc()).iterfind("disks/disk")
    }
    if in_checkpoint.get(disk) != "bitmap":
        return Changes(reason=f"checkpoint {token} does not cover disk {disk}", next_token=next_token)
    return Changes(source=SOURCE, base=token, next_token=next_token)


def _begin(
    dom: libvirt.virDomain,
    vm: VMDescription,
    request: BackupRequest,
    server: dict[str, str],
    scratch: dict[str, Path],
    changes: dict[str, Changes],
    new_cp: str | None,
    capable: set[str],
) -> dict[str, Changes]:
    """Start the backup job; when libvirt refuses an incremental (a lost bitmap), start a full one."""
    all_disks = [s.target for s in disk_specs(dom.XMLDesc(0))]
    checkpoint_xml = _checkpoint_xml(new_cp, all_disks, capable) if new_cp else None
    with frozen(dom, vm.name, request.quiesce):
        try:
            dom.backupBegin(_backup_xml(server, all_disks, scratch, changes), checkpoint_xml)
            return changes
        except libvirt.libvirtError as exc:
            if server.get("tls") == "yes" and "credentials" in (exc.get_error_message() or ""):
                raise TransportSecurityError(
                    f"provider kvm: NBD over TLS on {server['name']}: libvirt cannot use its server certificates "
                    f"({exc.get_error_message()}); put them in qemu.conf's backup_tls_x509_cert_dir there"
                ) from exc
            if not any(c.base for c in changes.values()):
                raise_for(exc, f"VM {vm.name}: starting the backup job")
            reason = f"libvirt refused the incremental backup ({exc.get_error_message()}); checkpoint broken"
            log.warning("kvm.incremental_refused", vm=vm.name, error=exc.get_error_message())
            changes = {n: Changes(reason=reason, next_token=c.next_token) for n, c in changes.items()}
            with libvirt_errors(f"VM {vm.name}: starting the backup job"):
                dom.backupBegin(_backup_xml(server, all_disks, scratch, changes), checkpoint_xml)
            return changes


def _backup_xml(
    server: dict[str, str], all_disks: list[str], scratch: dict[str, Path], changes: dict[str, Changes]
) -> str:
    root = ET.Element("domainbackup", mode="pull")
    ET.SubElement(root, "server", server)
    disks = ET.SubElement(root, "disks")
    for name in all_disks:
        if name not in changes:
            ET.SubElement(disks, "disk", name=name, backup="no")
            continue
        base = changes[name].base
        attrs = {"name": name, "backup": "yes", "type": "file"}
        attrs.update({"backupmode": "incremental", "incremental": base} if base else {"backupmode": "full"})
        ET.SubElement(ET.SubElement(disks, "disk", attrs), "scratch", file=str(scratch[name]))
    return ET.tostring(root, encoding="unicode")


def _checkpoint_xml(name: str, all_disks: list[str], capable: set[str]) -> str:
    root = ET.Element("domaincheckpoint")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "description").text = "GenieVM backup checkpoint"
    disks = ET.SubElement(root, "disks")
    for disk in all_disks:
        ET.SubElement(disks, "disk", name=disk, checkpoint="bitmap" if disk in capable else "no")
    return ET.tostring(root, encoding="unicode")


def _exports(dom: libvirt.virDomain) -> dict[str, tuple[str, str | None]]:
    """Each disk's NBD export name and dirty-bitmap name, as libvirt reports them."""
    with libvirt_errors("reading the backup job"):
        root = ET.fromstring(dom.backupGetXMLDesc())
    return {
        str(d.get("name")): (str(d.get("exportname") or d.get("name")), d.get("exportbitmap") or None)
        for d in root.iterfind("disks/disk")
        if d.get("backup") == "yes"
    }


def _with_context(disk: str, changes: Changes, bitmap: str | None) -> Changes:
    if not changes.base:
        return changes
    if not bitmap:
        raise ProviderError(f"provider kvm: the backup job exports no dirty bitmap for incremental disk {disk}")
    return replace(changes, context=f"qemu:dirty-bitmap:{bitmap}")


def _client(address: Address, export: str, changes: Changes, tls_dir: Path | None) -> NBDClient:
    contexts = (ALLOCATION, changes.context) if changes.context else (ALLOCATION,)
    return NBDClient(address, export, contexts, tls_dir, readers=READERS)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text() or 0) or None
    except (OSError, ValueError):
        return None


def abort_stale_job(dom: libvirt.virDomain, place: JobPlace) -> None:
    """Abort a backup job a killed GenieVM left behind (served where GenieVM serves its own).

    Called only by the process that owns the VM's job (``JobPlace.owning``).
    """
    try:
        xml = dom.backupGetXMLDesc()
    except libvirt.libvirtError:
        return  # no backup job
    server = ET.fromstring(xml).find("server")
    if not place.owns(server):
        where = ET.tostring(server, encoding="unicode") if server is not None else "push mode"
        raise ProviderError(f"provider kvm: VM {dom.name()} has a backup job that is not GenieVM's ({where})")
    log.warning("kvm.stale_backup_job_aborted", vm=dom.name())
    _abort(dom)
    if server is not None and server.get("socket"):
        Path(server.get("socket", "")).unlink(missing_ok=True)


ABORT_WAIT = 30.0  # seconds to wait for libvirt to end an aborted backup job
ABORT_POLL = 0.002  # the first pause before looking again whether it has (doubled up to 50 ms)


def _abort(dom: libvirt.virDomain) -> None:
    """End the VM's backup job, and wait until libvirt has: it may linger after ``abortJob`` returns."""
    try:
        dom.abortJob()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # no job: already gone
            log.warning("kvm.abort_failed", vm=dom.name(), error=exc.get_error_message())
    deadline, pause = time.monotonic() + ABORT_WAIT, ABORT_POLL
    while _has_backup_job(dom):  # it usually goes within a few milliseconds: look again soon, then less often
        if time.monotonic() > deadline:
            log.warning("kvm.backup_job_lingers", vm=dom.name(), seconds=ABORT_WAIT)
            return
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def _has_backup_job(dom: libvirt.virDomain) -> bool:
    try:
        dom.backupGetXMLDesc()
    except libvirt.libvirtError:
        return False
    return True


def _delete_checkpoints(dom: libvirt.virDomain, names: list[str]) -> None:
    """Delete GenieVM's checkpoints; one whose bitmap is gone (broken) loses its metadata only."""
    for name in names:
        try:
            checkpoint = dom.checkpointLookupByName(name)
            try:
                checkpoint.delete()
            except libvirt.libvirtError as exc:
                log.warning("kvm.checkpoint_broken", vm=dom.name(), checkpoint=name, error=exc.get_error_message())
                checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
            log.info("kvm.checkpoint_deleted", vm=dom.name(), checkpoint=name)
        except libvirt.libvirtError as exc:
            log.warning("kvm.checkpoint_delete_failed", vm=dom.name(), checkpoint=name, error=exc.get_error_message())


def _remove_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
