"""The filesystem storage target: put/get/exists/list/delete, atomicity, and its errors.

Permission and full-disk errors use real filesystems: a read-only tmpfs gives
EROFS, a 1 MiB tmpfs gives ENOSPC. Mounting needs root (these tests run as
root here); without it those tests are skipped with the reason.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from genievm_storage_fs import FilesystemStorage, open_filesystem_storage
from genievm_storage_fs.checks import TestFilesystemStorageContract

from genievm_core.errors import (
    ConfigError,
    ObjectNotFoundError,
    StorageError,
    StorageFullError,
    StoragePermissionError,
)
from genievm_core.plugin import PluginHost
from genievm_core.repository.storage import open_storage
from genievm_core.testing import mounted_tmpfs


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStorage:
    return FilesystemStorage(tmp_path / "repo")


def files_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- semantics

__all__ = ["TestFilesystemStorageContract"]  # the storage contract (the plugin's self-check) runs here


def test_keys_are_paths_below_the_root(store: FilesystemStorage) -> None:
    store.put("chunks/ab/abcdef", b"\x00\x01" * 1000)
    assert (store.root / "chunks" / "ab" / "abcdef").read_bytes() == b"\x00\x01" * 1000
    assert files_below(store.root) == ["chunks/ab/abcdef"]
    store.delete("chunks/ab/abcdef")
    assert files_below(store.root) == []


def test_list_of_a_missing_repository_is_empty(tmp_path: Path) -> None:
    assert list(FilesystemStorage(tmp_path / "absent").list("")) == []


@pytest.mark.parametrize("key", ["x.tmp", "chunks/ab/.c.1234.tmp"])
def test_temporary_file_names_are_not_keys(store: FilesystemStorage, key: str) -> None:
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(StorageError, match="invalid object key"):
            call()
    assert not (store.root.parent / "x").exists()


# ---------------------------------------------------------------- atomicity


def test_puts_leave_no_temporary_files(store: FilesystemStorage) -> None:
    for i in range(50):
        store.put(f"chunks/{i % 4:02x}/obj{i}", os.urandom(1000))
        store.put("config", str(i).encode())
    assert temp_files(store.root) == []
    assert len(list(store.list(""))) == 51


def test_temporary_files_of_a_crashed_put_are_not_objects(store: FilesystemStorage) -> None:
    store.put("manifests/m1", b"whole")
    crashed = store.root / "manifests" / ".m2.0123456789ab.tmp"
    crashed.write_bytes(b"half")
    assert sorted(store.list("manifests/")) == ["manifests/m1"]
    assert not store.exists("manifests/m2")


def test_put_after_its_folder_was_removed(store: FilesystemStorage) -> None:
    """Another process (garbage collection, an operator) may remove a fan-out folder between puts."""
    store.put("chunks/ab/ab01", b"one")
    shutil.rmtree(store.root / "chunks" / "ab")  # by hand, with what it held
    store.put("chunks/ab/ab02", b"two")
    assert store.get("chunks/ab/ab02") == b"two"
    store.delete("chunks/ab/ab02")  # a delete, by this process or another
    store.put("chunks/ab/ab03", b"three")
    assert store.get("chunks/ab/ab03") == b"three"


def test_a_delete_removes_the_folders_it_empties(store: FilesystemStorage) -> None:
    """``indexes/<backup id>/`` of a pruned backup goes with its last index; the root and other folders stay."""
    store.put("indexes/b1/vda", b"a")
    store.put("indexes/b1/vdb", b"b")
    store.put("indexes/b2/vda", b"c")
    store.delete("indexes/b1/vda")
    assert (store.root / "indexes" / "b1").is_dir(), "vdb is still in it"
    store.delete("indexes/b1/vdb")
    assert sorted(p.name for p in (store.root / "indexes").iterdir()) == ["b2"]
    store.delete("indexes/b2/vda")
    store.delete("indexes/b9/absent")  # nothing there: nothing to remove, no error
    assert store.root.is_dir() and list(store.root.iterdir()) == []


def test_puts_into_a_folder_that_deletes_keep_emptying(store: FilesystemStorage) -> None:
    """A delete that empties a folder removes it while another writer puts into it: every put lands whole."""
    errors: list[BaseException] = []

    def churn(name: str) -> None:
        store = FilesystemStorage(root, fsync=False)  # one per writer, as in separate processes
        try:
            for i in range(1500):
                key = f"indexes/b1/{name}"
                store.put(key, f"{name}{i}".encode())
                assert store.get(key) == f"{name}{i}".encode()
                assert key in list(store.list("indexes/"))
                store.delete(key)
        except BaseException as exc:
            errors.append(exc)

    root = store.root
    threads = [threading.Thread(target=churn, args=(name,)) for name in ("vda", "vdb", "vdc")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list(store.root.iterdir()) == []


# ---------------------------------------------------------------- errors


def test_a_path_under_a_file_is_a_storage_error(store: FilesystemStorage) -> None:
    store.put("afile", b"x")
    with pytest.raises(StorageError) as info:
        store.put("afile/child", b"y")
    assert not isinstance(info.value, (ObjectNotFoundError, StorageFullError, StoragePermissionError))
    assert "afile/child" in str(info.value)
    with pytest.raises(StorageError):
        store.get("afile/child")
    assert not store.exists("afile/child")
    assert temp_files(store.root) == []


def test_get_of_a_folder_is_a_storage_error(store: FilesystemStorage) -> None:
    store.put("manifests/m1", b"x")
    with pytest.raises(StorageError) as info:
        store.get("manifests")
    assert not isinstance(info.value, ObjectNotFoundError)


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root ignores file modes, so EACCES cannot happen (EROFS is tested below)"
)
def test_permission_denied(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path / "repo")
    store.put("config", b"{}")
    os.chmod(store.root, 0o500)
    try:
        with pytest.raises(StoragePermissionError, match="permission denied"):
            store.put("chunks/ab/ab01", b"x")
    finally:
        os.chmod(store.root, 0o700)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "small", "size=1m") as folder:
        yield folder


@pytest.fixture
def readonly_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        yield folder


def test_full_disk_is_storage_full(small_fs: Path) -> None:
    store = FilesystemStorage(small_fs / "repo")
    store.put("config", b"old config")
    with pytest.raises(StorageFullError, match="no space left"):
        store.put("config", os.urandom(2 << 20))
    assert store.get("config") == b"old config", "a failed put must not damage the existing object"
    assert temp_files(small_fs) == [], "a failed put must not leave its temporary file"
    store.put("chunks/ab/ab01", b"small objects still fit")
    assert store.get("chunks/ab/ab01") == b"small objects still fit"


def test_read_only_filesystem_is_permission_error(readonly_fs: Path) -> None:
    store = FilesystemStorage(readonly_fs)
    with pytest.raises(StoragePermissionError, match="permission denied"):
        store.put("config", b"{}")
    with pytest.raises(ObjectNotFoundError):
        store.get("config")
    assert list(store.list("")) == []


# ---------------------------------------------------------------- URLs and registration


def test_urls_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_filesystem_storage(f"file://{tmp_path}/r", {}).root == tmp_path / "r"
    assert open_filesystem_storage(str(tmp_path / "r"), {}).root == tmp_path / "r"
    assert open_filesystem_storage(f"file://{tmp_path}/with%20space", {}).root == tmp_path / "with space"
    monkeypatch.chdir(tmp_path)
    relative = open_filesystem_storage("rel/repo", {})
    assert relative.root == tmp_path / "rel" / "repo" and relative.root.is_absolute()
    assert relative.url == f"file://{tmp_path}/rel/repo"
    assert open_filesystem_storage("x", {"fsync": False}).fsync is False
    assert open_filesystem_storage("x", {"fsync": "false"}).fsync is False, "as --storage-option fsync=false gives it"
    assert open_filesystem_storage("x", {"fsync": "yes"}).fsync is True
    with pytest.raises(ConfigError, match="storage option fsync: 'maybe' is not true or false"):
        open_filesystem_storage("x", {"fsync": "maybe"})


def test_registered_as_the_file_scheme_through_its_entry_point(tmp_path: Path) -> None:
    host = PluginHost()
    info = {p.name: p for p in host.plugins()}["file"]
    assert (info.distribution, info.origin) == ("genievm-storage-fs", "entry-point")
    assert info.registers == {"storage target": ["file"], "self-check": ["file-contract"]}
    for url in (str(tmp_path / "r"), f"file://{tmp_path}/r"):
        store = open_storage(host, url)
        assert isinstance(store, FilesystemStorage) and store.root == tmp_path / "r"


# ---------------------------------------------------------------- batched puts (chunks)


def test_a_batched_put_appears_only_once_its_batch_is_durable(store: FilesystemStorage) -> None:
    store.put_batched("chunks/ab/ab01", b"one")
    store.put_batched("chunks/cd/cd02", b"two")
    assert not store.exists("chunks/ab/ab01") and list(store.list("chunks/")) == []
    with pytest.raises(ObjectNotFoundError):
        store.get("chunks/cd/cd02")
    store.flush()
    assert store.get("chunks/ab/ab01") == b"one" and store.get("chunks/cd/cd02") == b"two"
    assert temp_files(store.root) == []


def test_a_batch_fsyncs_each_file_before_its_rename_and_each_folder_after(
    store: FilesystemStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("rename", str(src)))
        real_replace(src, dst)

    keys = ["chunks/ab/ab01", "chunks/ab/ab02", "chunks/cd/cd03"]
    for key in keys:
        store.put_batched(key, key.encode())
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.flush()
    renames = [i for i, (what, _) in enumerate(events) if what == "rename"]
    file_syncs = [i for i, (what, path) in enumerate(events) if what == "fsync" and path.endswith(".tmp")]
    folder_syncs = [path for what, path in events[max(renames) + 1 :] if what == "fsync"]
    assert len(renames) == 3 and len(file_syncs) == 3
    assert max(file_syncs) < min(renames), "a file was renamed into place before it was durable"
    assert sorted(folder_syncs) == [str(store.root / "chunks" / "ab"), str(store.root / "chunks" / "cd")]
    assert [store.get(k) for k in keys] == [k.encode() for k in keys]


def test_a_full_batch_is_made_durable_in_the_background(
    store: FilesystemStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("genievm_storage_fs.storage.BATCH_OBJECTS", 3)
    for n in range(3):
        store.put_batched(f"chunks/ab/ab0{n}", b"x")
    store.put_batched("chunks/ab/ab09", b"y")  # starts a new batch
    deadline = threading.Event()
    for _ in range(100):
        if store.exists("chunks/ab/ab02"):
            break
        deadline.wait(0.05)
    assert [store.exists(f"chunks/ab/ab0{n}") for n in range(3)] == [True] * 3
    assert not store.exists("chunks/ab/ab09")
    store.flush()
    assert store.exists("chunks/ab/ab09")


def test_a_batch_goes_early_while_no_other_is_being_made_durable(
    store: FilesystemStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At ``EARLY_BYTES`` a batch is made durable at once when the flusher is idle, so the end's flush has little
    left; while one is being made durable, the next waits for the batch bounds or the flush."""
    monkeypatch.setattr("genievm_storage_fs.storage.EARLY_BYTES", 4)
    fsync, gate = os.fsync, threading.Event()

    def held(fd: int) -> None:
        assert gate.wait(10)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", held)
    store.put_batched("chunks/ab/ab01", b"1234")  # the flusher is idle: this batch goes now
    store.put_batched("chunks/ab/ab02", b"5678")  # ab01 is being made durable: this one waits
    gate.set()
    for _ in range(200):
        if store.exists("chunks/ab/ab01"):
            break
        threading.Event().wait(0.05)
    assert store.exists("chunks/ab/ab01") and not store.exists("chunks/ab/ab02")
    store.flush()
    assert store.get("chunks/ab/ab02") == b"5678"


def resident_bytes(path: Path) -> int:
    """How much of the file is in the page cache: mincore(2) over a mapping of it (which reads nothing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    pages = ctypes.create_string_buffer(-(-size // mmap.PAGESIZE))
    with path.open("rb") as f:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            assert libc.mincore(address, size, pages) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(address, size)
    return sum(byte & 1 for byte in pages.raw) * mmap.PAGESIZE


def test_a_chunk_leaves_the_page_cache_once_durable_and_reads_do_not_bring_it_back(store: FilesystemStorage) -> None:
    """Chunks are read again by a restore or a check: a backup does not keep them cached, and a restore reads
    them from the device into the reader's buffer, not through new cache pages. Indexes (put) stay cached."""
    data = os.urandom((1 << 20) + 123)  # not a whole number of pages
    store.put("indexes/ab01", data)
    store.put_batched("chunks/ab/ab01", data)
    store.flush()
    chunk, index = store.root / "chunks" / "ab" / "ab01", store.root / "indexes" / "ab01"
    pages = -(-len(data) // mmap.PAGESIZE) * mmap.PAGESIZE  # the whole file, in whole pages
    assert resident_bytes(index) == pages  # what was just written is cached ...
    assert resident_bytes(chunk) == 0  # ... unless it was dropped
    assert [store.get("chunks/ab/ab01") for _ in range(2)] == [data, data]
    assert resident_bytes(chunk) == 0
    assert store.get("indexes/ab01") == data and resident_bytes(index) == pages  # read from the cache, left there


def test_where_o_direct_is_refused_objects_are_read_buffered(
    store: FilesystemStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(1 << 20)
    store.put_batched("chunks/ab/ab01", data)
    store.flush()
    real = fcntl.fcntl

    def refusing(fd: int, command: int, flags: int = 0) -> int:
        if command == fcntl.F_SETFL and flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # as tmpfs before Linux 6.6, some FUSE file systems
        return real(fd, command, flags)

    monkeypatch.setattr(fcntl, "fcntl", refusing)
    assert store.get("chunks/ab/ab01") == data
    assert resident_bytes(store.root / "chunks" / "ab" / "ab01") == len(data)  # read through the cache
    assert not store._reader.direct


def test_a_failed_batch_fails_the_flush_and_leaves_nothing_behind(
    store: FilesystemStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_batched("chunks/ab/ab01", b"one")

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(StorageError, match="Input/output error"):
        store.flush()
    assert not store.exists("chunks/ab/ab01") and temp_files(store.root) == []


def test_batched_puts_without_fsync_appear_at_once(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path / "repo", fsync=False)
    store.put_batched("chunks/ab/ab01", b"one")
    assert store.get("chunks/ab/ab01") == b"one"
