"""Chunks on the filesystem are made durable in batches, and always before an index names them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from support import backup_vm, random_bytes, stray_files, write_image

from genievm_core.plugin import PluginHost
from genievm_core.repository import ChunkIndex, Repository

RepoFactory = Callable[..., tuple[Repository, Path]]


def test_a_chunk_is_durable_before_the_index_that_names_it(new_repo: RepoFactory) -> None:
    repo, _path = new_repo()
    data = random_bytes(repo.chunk_size, seed=3)
    cid = repo.codec.chunk_id(data)
    repo.put_chunk(cid, data)
    assert not repo.has_chunk(cid), "a batched chunk showed before its batch was durable"
    index = ChunkIndex.empty(repo.chunk_size, repo.chunk_size)
    index[0] = cid
    repo.put_index("b1", "vda", index)
    assert repo.has_chunk(cid) and repo.get_chunk(cid) == data


def test_every_chunk_a_backup_names_is_stored_and_no_temporary_file_is_left(
    host: PluginHost, new_repo: RepoFactory, tmp_path: Path
) -> None:
    repo, path = new_repo(encrypted=True)
    chunk = repo.chunk_size
    layout = [(i * chunk, random_bytes(chunk, seed=i)) for i in range(0, 12, 2)]
    image = write_image(tmp_path / "vda.img", 12 * chunk, layout)
    manifest = backup_vm(host, repo, "vm", {"vda": image})
    ids = [cid for cid in repo.disk_index(manifest.disks[0]) if cid != bytes(32)]
    assert len(ids) == 6 and all(repo.has_chunk(cid) for cid in ids)
    assert stray_files(path) == []
