"""Incremental backups store only what changed; dedup across disks, backups and VMs.

The image provider has no CBT, so its incrementals read the allocated data and
compare chunk ids with the parent's index ("hash-compare"). The engine's CBT
path is tested in test_engine_cbt.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import (
    CHUNK,
    RepoFactory,
    backup_vm,
    chunk_files,
    patch_image,
    random_bytes,
    restore_vm,
    write_image,
)

from genievm_core.errors import BackupNotFoundError
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository

SIZE = 32 * CHUNK + 777


def base_image(path: Path) -> Path:
    """20 chunks of random data (0-19), holes after, and data in the short last chunk."""
    return write_image(path, SIZE, [(0, random_bytes(20 * CHUNK, 1)), (32 * CHUNK, random_bytes(777, 2))])


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def repo_and_path(request: pytest.FixtureRequest, new_repo: RepoFactory) -> tuple[Repository, Path]:
    return new_repo(encrypted=request.param)


def test_incremental_stores_only_changed_chunks(
    host: PluginHost, repo_and_path: tuple[Repository, Path], tmp_path: Path
) -> None:
    repo, path = repo_and_path
    image = base_image(tmp_path / "vda.img")
    original = image.read_bytes()
    full = backup_vm(host, repo, "vm", {"vda": image})
    assert full.kind == "full" and full.stats.chunks_new == 21
    assert len(chunk_files(path)) == 21

    # change chunk 3 (one byte), chunks 9 and 10 (a write across their boundary),
    # chunk 25 (a hole gets data) and chunk 32 (the short last one)
    patch_image(
        image,
        [
            (3 * CHUNK + 7, b"\xff"),
            (10 * CHUNK - 50, random_bytes(100, 3)),
            (25 * CHUNK, random_bytes(10, 4)),
            (32 * CHUNK + 776, b"\x01"),
        ],
    )
    changed = {3, 9, 10, 25, 32}
    inc = backup_vm(host, repo, "vm", {"vda": image})
    (disk,) = inc.disks
    assert inc.kind == "incremental" and inc.parent_id == full.backup_id
    assert disk.cbt.mode == "hash-compare" and disk.cbt.reason  # the image provider has no CBT: it says why
    assert inc.stats.chunks_new == len(changed)
    assert inc.stats.chunks_deduplicated == 21 - 4  # the unchanged data chunks (3, 9, 10, 32 changed)
    assert inc.stats.bytes_new == len(changed) * CHUNK - (CHUNK - 777)
    assert 0 < inc.stats.bytes_stored
    assert len(chunk_files(path)) == 21 + len(changed)

    old_index, new_index = repo.get_index(full.disks[0].index), repo.get_index(disk.index)
    assert {i for i in range(new_index.count) if new_index[i] != old_index[i]} == changed

    restore_vm(host, repo, "vm", tmp_path / "old", backup_id=full.backup_id)
    restore_vm(host, repo, "vm", tmp_path / "new", backup_id=inc.backup_id)
    assert (tmp_path / "old" / "vda.img").read_bytes() == original
    assert (tmp_path / "new" / "vda.img").read_bytes() == image.read_bytes()


def test_nothing_changed_stores_nothing(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    repo, path = new_repo()
    image = base_image(tmp_path / "vda.img")
    backup_vm(host, repo, "vm", {"vda": image})
    before = chunk_files(path)
    again = backup_vm(host, repo, "vm", {"vda": image})
    assert again.stats.chunks_new == 0 and again.stats.bytes_stored == 0 and again.stats.bytes_new == 0
    assert again.stats.chunks_deduplicated == 21 and again.stats.chunks_zero == 12
    assert chunk_files(path) == before


def test_data_that_becomes_zero_or_hole(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    repo, path = new_repo()
    image = base_image(tmp_path / "vda.img")
    backup_vm(host, repo, "vm", {"vda": image})
    patch_image(image, [(5 * CHUNK, bytes(CHUNK))])  # written zeros
    with open(image, "r+b") as f:  # punch chunks 15-19 out: truncate and regrow
        f.truncate(15 * CHUNK)
        f.truncate(SIZE)
    patch_image(image, [(32 * CHUNK, random_bytes(777, 2))])  # the tail, as it was
    inc = backup_vm(host, repo, "vm", {"vda": image})
    assert inc.stats.chunks_new == 0
    assert inc.stats.chunks_zero == 12 + 1 + 5
    assert len(chunk_files(path)) == 21
    restore_vm(host, repo, "vm", tmp_path / "out", backup_id=inc.backup_id)
    assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()


@pytest.mark.parametrize("new_size", [SIZE + 3 * CHUNK + 5, 7 * CHUNK + 3, 0])
def test_a_disk_that_grows_or_shrinks(host: PluginHost, new_repo: RepoFactory, tmp_path: Path, new_size: int) -> None:
    repo, _ = new_repo()
    image = base_image(tmp_path / "vda.img")
    full = backup_vm(host, repo, "vm", {"vda": image})
    with open(image, "r+b") as f:
        f.truncate(new_size)
        if new_size > SIZE:
            f.seek(new_size - 100)
            f.write(random_bytes(100, 9))
    inc = backup_vm(host, repo, "vm", {"vda": image})
    assert inc.disks[0].size == new_size and inc.parent_id == full.backup_id
    assert inc.stats.chunks_new <= 2
    restore_vm(host, repo, "vm", tmp_path / "out", backup_id=inc.backup_id)
    assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()


def test_full_backup_on_request_still_deduplicates(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    repo, path = new_repo()
    image = base_image(tmp_path / "vda.img")
    backup_vm(host, repo, "vm", {"vda": image})
    full = backup_vm(host, repo, "vm", {"vda": image}, incremental=False)
    assert full.kind == "full" and full.parent_id is None and full.disks[0].cbt.mode == "full"
    assert full.stats.chunks_new == 0 and full.stats.chunks_deduplicated == 21
    assert len(chunk_files(path)) == 21


def test_a_new_disk_in_an_incremental_is_backed_up_in_full(
    host: PluginHost, new_repo: RepoFactory, tmp_path: Path
) -> None:
    repo, _ = new_repo()
    vda = base_image(tmp_path / "vda.img")
    backup_vm(host, repo, "vm", {"vda": vda})
    vdb = write_image(tmp_path / "vdb.img", 2 * CHUNK, [(0, random_bytes(2 * CHUNK, 7))])
    inc = backup_vm(host, repo, "vm", {"vda": vda, "vdb": vdb})
    modes = {d.name: d.cbt.mode for d in inc.disks}
    assert modes == {"vda": "hash-compare", "vdb": "full"}
    assert inc.kind == "incremental" and inc.stats.chunks_new == 2


def test_deleting_the_parent_does_not_break_the_child(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    """Every backup is a complete index: removing its parent (manifest and indexes) loses nothing."""
    repo, path = new_repo()
    image = base_image(tmp_path / "vda.img")
    full = backup_vm(host, repo, "vm", {"vda": image})
    patch_image(image, [(4 * CHUNK, random_bytes(CHUNK, 11))])
    child = backup_vm(host, repo, "vm", {"vda": image})
    (path / "manifests" / full.backup_id).unlink()
    shutil.rmtree(path / "indexes" / full.backup_id)
    assert repo.backup_ids() == [child.backup_id]
    restore_vm(host, repo, "vm", tmp_path / "out", backup_id=child.backup_id)
    assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()


# ---------------------------------------------------------------- dedup


def test_identical_disks_are_stored_once(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    repo, path = new_repo()
    data = random_bytes(6 * CHUNK, 21)
    a = write_image(tmp_path / "a.img", 8 * CHUNK, [(0, data)])
    b = write_image(tmp_path / "b.img", 8 * CHUNK, [(0, data)])
    manifest = backup_vm(host, repo, "vm", {"vda": a, "vdb": b}, max_concurrent_disks=1)
    assert len(chunk_files(path)) == 6
    assert manifest.stats.chunks_new == 6 and manifest.stats.chunks_deduplicated == 6
    ia, ib = (repo.get_index(d.index) for d in manifest.disks)
    assert list(ia) == list(ib)


def test_identical_disks_copied_in_parallel_are_stored_once(
    host: PluginHost, new_repo: RepoFactory, tmp_path: Path
) -> None:
    repo, path = new_repo()
    data = random_bytes(6 * CHUNK, 22)
    disks = {f"vd{c}": write_image(tmp_path / f"{c}.img", 6 * CHUNK, [(0, data)]) for c in "abcd"}
    manifest = backup_vm(host, repo, "vm", disks, max_concurrent_disks=4)
    assert len(chunk_files(path)) == 6
    assert manifest.stats.chunks_new + manifest.stats.chunks_deduplicated == 24
    restore_vm(host, repo, "vm", tmp_path / "out")
    for name, source in disks.items():
        assert (tmp_path / "out" / f"{name}.img").read_bytes() == source.read_bytes()


def test_repeated_content_within_a_disk_is_stored_once(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    """16 identical chunks in a row: one is new, 15 are deduplicated, whatever the worker threads do."""
    repo, path = new_repo()
    block = random_bytes(CHUNK, 23)
    image = write_image(tmp_path / "vda.img", 20 * CHUNK, [(i * CHUNK, block) for i in range(16)])
    manifest = backup_vm(host, repo, "vm", {"vda": image})
    assert len(chunk_files(path)) == 1
    stats = manifest.stats
    assert (stats.chunks_new, stats.chunks_deduplicated, stats.chunks_zero) == (1, 15, 4)
    assert stats.bytes_new == CHUNK and stats.bytes_stored < CHUNK + 100


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_another_vm_with_the_same_data_stores_nothing(
    host: PluginHost, new_repo: RepoFactory, tmp_path: Path, encrypted: bool
) -> None:
    repo, path = new_repo(encrypted=encrypted)
    first = backup_vm(host, repo, "web01", {"vda": base_image(tmp_path / "web01.img")})
    before = chunk_files(path)
    clone = backup_vm(host, repo, "web02", {"root": base_image(tmp_path / "web02.img")})
    assert clone.kind == "full" and clone.parent_id is None  # another VM: no parent
    assert clone.stats.chunks_new == 0 and clone.stats.bytes_stored == 0
    assert clone.stats.chunks_deduplicated == first.stats.chunks_new == 21
    assert chunk_files(path) == before
    restore_vm(host, repo, "web02", tmp_path / "out")
    assert (tmp_path / "out" / "root.img").read_bytes() == (tmp_path / "web02.img").read_bytes()


# ---------------------------------------------------------------- which backup is the latest


def test_latest_is_the_newest_backup_even_within_one_second(
    host: PluginHost, new_repo: RepoFactory, tmp_path: Path
) -> None:
    """Backups made in quick succession (a retry, a script, two disks' schedules).

    Backup ids are ``<UTC second>-<8 random hex digits>`` and "latest" (and each
    incremental's parent) is the greatest id, so within one second the order is random.
    """
    repo, _ = new_repo()
    image = write_image(tmp_path / "vda.img", 2 * CHUNK, [(0, b"version 0")])
    made = []
    for version in range(1, 13):
        patch_image(image, [(0, f"version {version}".encode())])
        made.append(backup_vm(host, repo, "vm", {"vda": image}))
        latest = repo.find_backup("vm", "latest")
        assert latest.backup_id == made[-1].backup_id, (
            f"after {len(made)} backups, 'latest' is {latest.backup_id} (made #{made.index(latest) + 1}), "
            f"not the newest {made[-1].backup_id}"
        )
        if len(made) > 1:
            assert made[-1].parent_id == made[-2].backup_id, "an incremental's parent must be the previous backup"
    listed = [m.backup_id for m in repo.manifests("vm")]
    assert listed == [m.backup_id for m in made], "backups are listed oldest first"


def test_latest_backup_by_vm_name_when_no_id_matches(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    """Operators name VMs; providers key them by id (a UUID): a name finds the VM's latest backup."""
    repo, _ = new_repo()
    image = write_image(tmp_path / "vda.img", 2 * CHUNK, [(0, b"data")])
    first, second = (backup_vm(host, repo, "vm", {"vda": image}) for _ in range(2))
    for i, made in enumerate((first, second)):
        vm = made.vm.model_copy(update={"id": f"uuid-{i}", "name": "web01"})
        repo.put_manifest(made.model_copy(update={"vm": vm}))
        if i == 0:  # only one VM of that name so far
            assert repo.find_backup("web01", "latest").backup_id == first.backup_id
    assert repo.find_backup("uuid-1", "latest").backup_id == second.backup_id
    with pytest.raises(BackupNotFoundError, match="VM name web01 is ambiguous"):
        repo.find_backup("web01", "latest")
