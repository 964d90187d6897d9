"""The ``https`` transport: disk files through the datastore's ``/folder`` URLs.

For sites without VDDK. Reads are ranged GETs (``Range: bytes=a-b``, answered
206) of the snapshot's disk file, sent with the vSphere session's cookie over
the same verified TLS as the SOAP connection. On ESXi and vCenter a disk's data
lives in ``<name>-flat.vmdk`` beside its ``<name>.vmdk`` descriptor; the
transport uses the flat file when it exists and the disk file itself
otherwise (a monolithic disk file), and logs which.

The datastore takes no ranged PUT: a file is written whole. A disk opened for
writing is therefore assembled in a sparse local scratch file (in
``scratchDir``, default the system's temporary folder: room for the disk's
written data is needed there) and streamed to the datastore with one PUT when
it is first read back (verify-after-restore then reads the datastore's copy)
or closed. Only a disk without snapshots is read correctly this way: the flat
file of a disk with older snapshots holds only the base (the provider checks).
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

import urllib3
from urllib3.exceptions import HTTPError

from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger
from genievm_core.models.extents import Extent
from genievm_vmware.transport import DiskHandle, DiskLocation

__all__ = ["HTTPSDiskHandle", "HTTPSTransport"]

log = get_logger("genievm.vmware.https")
UPLOAD_BLOCK = 1 << 20


class HTTPSTransport:
    """One connection pool to the vCenter or ESXi host, shared by every disk's handle."""

    name = "https"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        cookie: str,
        context: ssl.SSLContext,
        scratch_dir: Path | None = None,
        connections: int = 8,
    ) -> None:
        self.scratch_dir = scratch_dir
        self._headers = {"Cookie": cookie}
        verified = context.verify_mode != ssl.CERT_NONE
        self._pool = urllib3.HTTPSConnectionPool(
            host,
            port,
            maxsize=connections,
            ssl_context=context,
            cert_reqs="CERT_REQUIRED" if verified else "CERT_NONE",
            assert_hostname=None if verified else False,
            retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=(502, 503, 504)),
            timeout=urllib3.Timeout(connect=30, read=600),
            blocksize=UPLOAD_BLOCK,
        )
        self.where = f"{host}:{port}"

    def url(self, datacenter: str, datastore: str, path: str) -> str:
        return f"/folder/{quote(path)}?{urlencode({'dcPath': datacenter, 'dsName': datastore})}"

    def request(self, method: str, url: str, what: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            return self._pool.request(method, url, headers=headers, redirect=False, **kwargs)
        except HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ProviderError(f"provider vmware: {what} over https from {self.where}: {reason}") from exc

    def file_size(self, disk: DiskLocation, path: str) -> int | None:
        """The size of a datastore file, or None when there is no such file.

        Asked with a one-byte ranged GET (``Content-Range: bytes 0-0/SIZE``), which every
        datastore server answers; an empty file answers 416 (``bytes */0``).
        """
        url = self.url(disk.datacenter, disk.datastore, path)
        what = f"looking up [{disk.datastore}] {path}"
        resp = self.request("GET", url, what, headers={"Range": "bytes=0-0"}, preload_content=False)
        try:
            if resp.status == 404:
                return None
            check(resp, (200, 206, 416), what)
            total = str(resp.headers.get("Content-Range", "")).rpartition("/")[2]
            if resp.status != 200 and total.isdigit():
                return int(total)
            length = resp.headers.get("Content-Length")
            if resp.status == 200 and length is not None:
                return int(length)  # the server ignored the range: its length is the file's
            raise ProviderError(f"provider vmware: {what}: the server did not tell the file's size")
        finally:
            if resp.status == 200:
                resp.close()  # the whole file would follow: drop the connection rather than read it
            else:
                resp.drain_conn()

    def get_file(self, datacenter: str, datastore: str, path: str) -> bytes | None:
        """A small datastore file whole (the VM's NVRAM), or None when there is no such file."""
        what = f"reading [{datastore}] {path}"
        resp = self.request("GET", self.url(datacenter, datastore, path), what, preload_content=True)
        if resp.status == 404:
            return None
        check(resp, 200, what)
        return bytes(resp.data)

    def put_file(self, datacenter: str, datastore: str, path: str, data: bytes) -> None:
        what = f"writing [{datastore}] {path}"
        headers = {"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"}
        resp = self.request("PUT", self.url(datacenter, datastore, path), what, body=data, headers=headers)
        check(resp, (200, 201, 204), what)

    def open(self, disk: DiskLocation, *, writable: bool = False) -> DiskHandle:
        path, size = self._data_file(disk)
        return HTTPSDiskHandle(self, disk, path, size, writable=writable)

    def _data_file(self, disk: DiskLocation) -> tuple[str, int]:
        if disk.path.endswith(".vmdk") and not disk.path.endswith("-flat.vmdk"):
            flat = disk.path[: -len(".vmdk")] + "-flat.vmdk"
            size = self.file_size(disk, flat)
            if size is not None:
                log.info("vmware.https_data_file", disk=disk.path, file=flat, kind="flat extent")
                return flat, size
        size = self.file_size(disk, disk.path)
        if size is None:
            raise ProviderError(f"provider vmware: no file [{disk.datastore}] {disk.path} on {self.where}")
        self._refuse_formatted(disk, size)
        log.info("vmware.https_data_file", disk=disk.path, file=disk.path, kind="the disk file itself")
        return disk.path, size

    def _refuse_formatted(self, disk: DiskLocation, size: int) -> None:
        """A descriptor without a flat extent (vSAN, vVols, sparse disks) is no raw data: never read it as such."""
        if size == 0:
            return
        url = self.url(disk.datacenter, disk.datastore, disk.path)
        what = f"reading [{disk.datastore}] {disk.path}"
        resp = self.request("GET", url, what, headers={"Range": f"bytes=0-{min(size, 512) - 1}"})
        check(resp, (200, 206), what)
        head = resp.data[:512]
        if head.startswith((b"# Disk DescriptorFile", b"KDMV", b"COWD")):
            raise ProviderError(
                f"provider vmware: disk [{disk.datastore}] {disk.path} has no flat extent the https transport "
                "can read (a sparse disk, or vSAN or vVols storage); use -o transport=vddk"
            )

    def close(self) -> None:
        self._pool.close()


def check(resp: urllib3.BaseHTTPResponse, expected: int | tuple[int, ...], what: str) -> None:
    ok = (expected,) if isinstance(expected, int) else expected
    if resp.status in ok:
        return
    if resp.status in (401, 403):
        problem = "permission denied (is the session still valid?)"
    elif resp.status == 404:
        problem = "no such file"
    else:
        problem = f"HTTP {resp.status} {resp.reason or ''}".strip()
    raise ProviderError(f"provider vmware: {what}: {problem}")


def _scratch_file(folder: Path | None, size: int) -> IO[bytes]:
    """A sparse local file of ``size`` bytes in ``folder`` (made when missing, as ``--target`` is for other
    providers), or the system's temporary folder; removed when closed."""
    try:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.NamedTemporaryFile(prefix="genievm-vmdk-", dir=folder)  # noqa: SIM115 - closed by close()
    except OSError as exc:
        where = folder or tempfile.gettempdir()
        raise ProviderError(f"provider vmware: cannot stage a disk in {where}: {exc.strerror or exc}") from exc
    try:
        scratch.truncate(size)
    except OSError as exc:
        scratch.close()
        raise ProviderError(f"provider vmware: cannot stage a disk of {size} bytes in {scratch.name}: {exc}") from exc
    return scratch


class HTTPSDiskHandle:
    """One datastore disk file: ranged reads, or writes staged in a sparse scratch file.

    Reads may come from several threads at once (verify-after-restore); writes come from one.
    """

    def __init__(
        self, transport: HTTPSTransport, disk: DiskLocation, path: str, file_size: int, *, writable: bool
    ) -> None:
        self._t = transport
        self._disk = disk
        self._path = path
        self._url = transport.url(disk.datacenter, disk.datastore, path)
        self._file_size = file_size  # vcsim's files start empty: past their end the disk reads as zeros
        self._scratch: IO[bytes] | None = None
        self._dirty = False
        self._lock = threading.Lock()
        self.bytes_read = 0
        if writable:
            self._scratch = _scratch_file(transport.scratch_dir, disk.capacity)
            self._dirty = True  # a new disk is written whole even when all zeros

    @property
    def size(self) -> int:
        return self._disk.capacity

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:  # verify-after-restore reads from several threads: one upload, before any read
            if self._dirty:
                self._upload()
        end = min(offset + length, self._file_size)
        if end <= offset:
            return bytes(length)
        what = f"reading [{self._disk.datastore}] {self._path} at {offset}"
        resp = self._t.request("GET", self._url, what, headers={"Range": f"bytes={offset}-{end - 1}"})
        check(resp, 206, what)
        data = resp.data
        if len(data) != end - offset:
            raise ProviderError(f"provider vmware: {what}: {len(data)} bytes came, {end - offset} were asked for")
        self.bytes_read += len(data)
        return data if end - offset == length else data + bytes(length - (end - offset))

    def write(self, offset: int, data: bytes) -> None:
        if self._scratch is None:
            raise ProviderError(f"provider vmware: [{self._disk.datastore}] {self._path} was opened read-only")
        os.pwrite(self._scratch.fileno(), data, offset)
        self._dirty = True

    def allocated_extents(self) -> list[Extent] | None:
        return [Extent(0, min(self._file_size, self.size))] if self._scratch is None else None

    def _upload(self) -> None:
        assert self._scratch is not None
        what = f"writing [{self._disk.datastore}] {self._path}"
        self._scratch.seek(0)
        resp = self._t.request(
            "PUT",
            self._url,
            what,
            body=self._scratch,
            headers={"Content-Length": str(self.size), "Content-Type": "application/octet-stream"},
            preload_content=True,
        )
        check(resp, (200, 201, 204), what)
        self._file_size = self.size
        self._dirty = False
        log.info("vmware.https_uploaded", file=self._path, datastore=self._disk.datastore, size=self.size)

    def close(self) -> None:
        if self._scratch is None:
            return
        try:
            with self._lock:
                if self._dirty:
                    self._upload()
        finally:
            self._scratch.close()
            self._scratch = None

    def discard(self) -> None:
        """Drop the staged data without writing it (the restore failed)."""
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
