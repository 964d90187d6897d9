"""Patched chunks (docs/repository-format.md, "Patched chunks"): a CBT incremental that changed a small part of a
chunk stores only that part, over the parent's chunk; every read, check, copy and collection sees whole chunks.

The CBT is the dirvm example's (64 KiB blocks of a real image file, found by hashing), through the real job.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from genievm_dirvm.checks import make_vm_folder, patch
from support import open_repo, restore_by_hand_program, restore_vm

from genievm_core.jobs import run_backup, run_verify
from genievm_core.models.config import BackupConfig
from genievm_core.models.manifest import BackupManifest
from genievm_core.plugin import PluginHost
from genievm_core.repository import ZERO_ID, ChunkIndex, Repository
from genievm_core.repository.config import seal_config
from genievm_core.repository.copy import copy_backups
from genievm_core.repository.gc import prune_repository
from genievm_core.repository.objects import ObjectDamaged
from genievm_core.repository.patches import PatchRef, apply_patch, encode_patch, merge
from genievm_core.repository.storage import open_storage

KiB, MiB = 1024, 1 << 20
PASSPHRASE = "patched chunks"


def _repo(tmp_path: Path, name: str, encrypted: bool) -> Repository:
    storage = open_storage(PluginHost(), str(tmp_path / name))
    return Repository.init(storage, passphrase=PASSPHRASE if encrypted else None, chunk_size=MiB)


def _reopen(tmp_path: Path, name: str, encrypted: bool) -> Repository:
    """The repository as a new process opens it: it knows of no patch until it reads an index."""
    return open_repo(PluginHost(), tmp_path / name, PASSPHRASE if encrypted else None)


def _backup(repo: Repository, folder: Path) -> BackupManifest:
    config = BackupConfig(vm_id="web01", backup_path=repo.url, provider="dirvm", provider_options={"root": str(folder)})
    return run_backup(PluginHost(), config, repo, workers=2)


def _index(repo: Repository, manifest: BackupManifest, disk: str) -> ChunkIndex:
    return repo.disk_index(next(d for d in manifest.disks if d.name == disk))


def _stored(manifest: BackupManifest, disk: str) -> int:
    return next(d for d in manifest.disks if d.name == disk).stats.bytes_stored


def _restore_matches(repo: Repository, manifest: BackupManifest, target: Path, images: dict[str, bytes]) -> None:
    restore_vm(PluginHost(), repo, "web01", target, manifest.backup_id, provider="image", new_vm_name="copy")
    for disk, data in images.items():
        assert (target / f"{disk}.img").read_bytes() == data, disk


def _two_backups(tmp_path: Path, name: str, encrypted: bool) -> tuple[Path, Repository, BackupManifest, BackupManifest]:
    """The dirvm VM's folder, a new repository, a full backup and an incremental with one block of vda patched."""
    folder = make_vm_folder(tmp_path / "vms")
    repo = _repo(tmp_path, name, encrypted)
    first = _backup(repo, folder)
    patch(folder / "web01-vda.img", 600 * KiB, b"\xaa" * 10)
    return folder, repo, first, _backup(repo, folder)


def _images(folder: Path) -> dict[str, bytes]:
    return {disk: (folder / f"web01-{disk}.img").read_bytes() for disk in ("vda", "vdb")}


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_small_change_is_stored_as_a_patch_over_the_parents_chunk(tmp_path: Path, encrypted: bool) -> None:
    folder = make_vm_folder(tmp_path / "vms")  # vda: 1 MiB (one chunk); vdb: 200 KiB
    repo = _repo(tmp_path, "repo", encrypted)
    first = _backup(repo, folder)
    patch(folder / "web01-vda.img", 600 * KiB, b"\xaa" * 10)  # one 64 KiB block of 1 MiB: a patch
    patch(folder / "web01-vdb.img", 70 * KiB, b"\xbb" * 10)  # 64 KiB of 200 KiB, over a quarter: whole
    states = [_images(folder)]
    second = _backup(repo, folder)
    patch(folder / "web01-vda.img", 100 * KiB, b"\xcc" * 10)  # another block of the same chunk
    states.append(_images(folder))
    third = _backup(repo, folder)

    fresh = _reopen(tmp_path, "repo", encrypted)
    full, two, three = (_index(fresh, m, "vda") for m in (first, second, third))
    assert not full.patches and _index(fresh, second, "vdb").patches == {}
    assert two.patches[0].base == three.patches[0].base == full[0]  # never a patch over a patch
    assert two[0] != full[0] != three[0] != two[0]  # each entry is the id of its whole content
    assert fresh.patched_content(two[0], two.patches[0], check_content=True)[1] == [(576 * KiB, 640 * KiB)]
    spans = fresh.patched_content(three[0], three.patches[0], check_content=True)[1]
    assert spans == [(64 * KiB, 128 * KiB), (576 * KiB, 640 * KiB)]
    assert _stored(second, "vda") < 80 * KiB < _stored(first, "vda") // 2  # 64 KiB of random data, not 164
    assert fresh.has_object(_index(fresh, second, "vdb")[0])  # stored whole
    assert second.disks[0].cbt.mode == "cbt"
    assert fresh.has_chunk(two[0]) and not fresh.has_object(two[0])

    for i, (manifest, images) in enumerate(zip((second, third), states, strict=True)):
        _restore_matches(_reopen(tmp_path, "repo", encrypted), manifest, tmp_path / f"restored{i}", images)
    reports = run_verify(PluginHost(), _reopen(tmp_path, "repo", encrypted), [third], read_data=True)
    assert [p for r in reports for p in r.problems] == []

    script = tmp_path / "restore_by_hand.py"  # the format doc's program restores a patched disk too
    script.write_text(restore_by_hand_program())
    out = tmp_path / "by_hand.img"
    args = [sys.executable, str(script), str(tmp_path / "repo"), third.backup_id, "vda", str(out)]
    subprocess.run(args + ([PASSPHRASE] if encrypted else []), check=True, capture_output=True)
    assert out.read_bytes() == states[1]["vda"]


def test_changes_over_a_quarter_of_the_chunk_store_it_whole_again(tmp_path: Path) -> None:
    folder, repo, _, second = _two_backups(tmp_path, "repo", False)
    patch(folder / "web01-vda.img", 0, os.urandom(200 * KiB))  # with the patch's 64 KiB: 256 KiB + 10 bytes
    patch(folder / "web01-vda.img", 300 * KiB, b"\xdd")
    third = _backup(repo, folder)
    fresh = _reopen(tmp_path, "repo", False)
    assert _index(fresh, second, "vda").patches and not _index(fresh, third, "vda").patches
    assert fresh.has_object(_index(fresh, third, "vda")[0])
    _restore_matches(fresh, third, tmp_path / "restored", _images(folder))


def test_a_patch_over_a_hole_has_the_zero_chunk_as_its_base(tmp_path: Path) -> None:
    folder = make_vm_folder(tmp_path / "vms")  # vda's second half is a hole after 612 KiB
    with open(folder / "web01-vda.img", "r+b") as f:
        f.truncate(4 * MiB)  # chunks 1 to 3: holes
    repo = _repo(tmp_path, "repo", True)
    first = _backup(repo, folder)
    patch(folder / "web01-vda.img", 2 * MiB + 5, b"\xee" * 100)
    second = _backup(repo, folder)
    fresh = _reopen(tmp_path, "repo", True)
    assert _index(fresh, first, "vda")[2] == ZERO_ID
    assert _index(fresh, second, "vda").patches[2].base == ZERO_ID
    _restore_matches(fresh, second, tmp_path / "restored", _images(folder))


def test_collecting_garbage_keeps_the_base_of_a_patch_whose_backup_is_gone(tmp_path: Path) -> None:
    folder, repo, first, second = _two_backups(tmp_path, "repo", True)
    base = _index(repo, first, "vda")[0]
    assert _index(repo, second, "vda").patches[0].base == base and base not in _index(repo, second, "vda")

    report = prune_repository(_reopen(tmp_path, "repo", True), [first.backup_id], grace=timedelta(0))
    assert report.deleted  # the first backup's own objects went (its index, vdb's old chunk)
    fresh = _reopen(tmp_path, "repo", True)
    assert fresh.backup_ids() == [second.backup_id] and fresh.has_object(base)
    _restore_matches(fresh, second, tmp_path / "restored", _images(folder))

    prune_repository(_reopen(tmp_path, "repo", True), [second.backup_id], grace=timedelta(0))
    assert not _reopen(tmp_path, "repo", True).has_object(base)  # needed by no backup now


def test_verify_finds_a_damaged_patch_and_a_missing_base(tmp_path: Path) -> None:
    folder, repo, _, second = _two_backups(tmp_path, "repo", False)
    ref = _index(repo, second, "vda").patches[0]
    patch_file = tmp_path / "repo" / Repository.chunk_key(ref.patch)
    blob = bytearray(patch_file.read_bytes())
    blob[-1] ^= 1
    patch_file.write_bytes(blob)
    reports = run_verify(PluginHost(), _reopen(tmp_path, "repo", False), [second], read_data=True)
    problems = [p.detail for r in reports for p in r.problems]
    assert len(problems) == 1 and ref.patch.hex() in problems[0] and "corrupt" in problems[0]

    (tmp_path / "repo" / Repository.chunk_key(ref.base)).unlink()
    reports = run_verify(PluginHost(), _reopen(tmp_path, "repo", False), [second])
    problems = [p.detail for r in reports for p in r.problems]
    assert problems == [f"chunk {_index(repo, second, 'vda')[0].hex()} is missing"]


def test_verify_finds_a_damaged_patch_that_another_backups_patch_of_the_same_content_would_hide(
    tmp_path: Path,
) -> None:
    """The second and the fourth backup hold the same content of vda's chunk, patched differently over the same
    base (the fourth's patch also carries the block the third changed and the fourth changed back); a restore
    of the fourth would find the content through the second's patch too, but garbage collection keeps only the
    fourth's own, so verify reads each backup's chunk through its own index."""
    folder, repo, first, second = _two_backups(tmp_path, "repo", False)
    image = folder / "web01-vda.img"
    original = image.read_bytes()[700 * KiB : 700 * KiB + 10]
    patch(image, 700 * KiB, b"\xbb" * 10)
    third = _backup(repo, folder)
    patch(image, 700 * KiB, original)
    fourth = _backup(_reopen(tmp_path, "repo", False), folder)  # a process that never read the second's index
    two, four = _index(repo, second, "vda"), _index(repo, fourth, "vda")
    assert two[0] == four[0] and two.patches[0].patch != four.patches[0].patch
    patch_file = tmp_path / "repo" / Repository.chunk_key(four.patches[0].patch)
    blob = bytearray(patch_file.read_bytes())
    blob[-1] ^= 1
    patch_file.write_bytes(blob)
    reports = run_verify(PluginHost(), _reopen(tmp_path, "repo", False), [first, second, third, fourth], read_data=True)
    problems = [(r.backup_id, p.detail) for r in reports for p in r.problems]
    assert len(problems) == 1 and problems[0][0] == fourth.backup_id, problems
    assert four.patches[0].patch.hex() in problems[0][1] and "corrupt" in problems[0][1]

    patch_file.unlink()
    reports = run_verify(PluginHost(), _reopen(tmp_path, "repo", False), [first, second, third, fourth])
    problems = [(r.backup_id, p.detail) for r in reports for p in r.problems]
    assert problems == [(fourth.backup_id, f"chunk {four[0].hex()} is missing")]


def test_a_copy_writes_patched_chunks_whole_at_its_target(tmp_path: Path) -> None:
    folder, _, _, second = _two_backups(tmp_path, "source", True)
    target = _repo(tmp_path, "target", True)
    copy_backups(_reopen(tmp_path, "source", True), target, [second])
    copied = _reopen(tmp_path, "target", True)
    index = _index(copied, copied.get_manifest(second.backup_id), "vda")
    assert not index.patches and copied.has_object(index[0])
    _restore_matches(copied, second, tmp_path / "restored", _images(folder))


def test_a_repository_without_the_feature_stores_whole_chunks_in_version_1_indexes(tmp_path: Path) -> None:
    folder = make_vm_folder(tmp_path / "vms")
    repo = _repo(tmp_path, "repo", False)
    config, blob = seal_config(repo.config.model_copy(update={"features": ()}), None)  # as before the feature
    repo.storage.put("config", blob)
    repo = _reopen(tmp_path, "repo", False)
    assert not repo.patches_allowed
    _backup(repo, folder)
    patch(folder / "web01-vda.img", 600 * KiB, b"\xaa" * 10)
    second = _backup(repo, folder)
    index = _index(repo, second, "vda")
    assert not index.patches and index.to_bytes()[4] == 1 and repo.has_object(index[0])

    upgrade = [sys.executable, "-m", "genievm_core", "repo", "upgrade", repo.url]
    upgraded = subprocess.run(
        upgrade, capture_output=True, text=True, env=os.environ | {"GENIEVM_JOB_DB": str(tmp_path / "jobs")}
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.splitlines() == [
        f"added patched-chunks to repository {repo.url}: older GenieVM versions refuse it now"
    ]
    repo = _reopen(tmp_path, "repo", False)
    assert repo.patches_allowed and repo.config.format_version == 2
    patch(folder / "web01-vda.img", 700 * KiB, b"\xbb" * 10)
    third = _backup(repo, folder)
    index = _index(repo, third, "vda")
    assert list(index.patches) == [0] and index.to_bytes()[4] == 2, "the upgraded repository stores a patch"
    _restore_matches(_reopen(tmp_path, "repo", False), third, tmp_path / "restored", _images(folder))
    again = subprocess.run(
        upgrade, capture_output=True, text=True, env=os.environ | {"GENIEVM_JOB_DB": str(tmp_path / "jobs")}
    )
    assert again.stdout.splitlines() == [f"repository {repo.url} is already at format 2"], again.stderr


def test_a_version_2_index_round_trips_and_a_bad_patch_table_is_refused() -> None:
    index = ChunkIndex.empty(3 * MiB, MiB)
    index[0] = b"\x01" * 32
    index.set_patched(1, b"\x02" * 32, PatchRef(b"\x01" * 32, b"\x03" * 32))
    index.set_patched(2, b"\x04" * 32, PatchRef(ZERO_ID, b"\x05" * 32))
    data = index.to_bytes()
    back = ChunkIndex.from_bytes(data)
    assert data[4] == 2 and back.patches == index.patches and back.entries == index.entries
    assert back.stored_ids() == {b"\x01" * 32, b"\x03" * 32, b"\x05" * 32}  # the objects, not the patched ids
    index[1] = b"\x06" * 32  # stored whole again: no longer patched
    assert list(index.patches) == [2]

    end = 32 + 3 * 32 + 8
    swapped = data[:end] + data[end + 72 : end + 144] + data[end : end + 72]
    for bad in (data[:-1], swapped, data[:64] + bytes(32) + data[96:]):
        with pytest.raises(ObjectDamaged):
            ChunkIndex.from_bytes(bad)


def test_patches_apply_and_refuse_what_does_not_fit() -> None:
    base = os.urandom(64 * KiB)
    chunk = bytearray(base)
    chunk[10:20] = b"x" * 10
    chunk[40000:40001] = b"y"
    spans = merge([(10, 20)], [(15, 18), (40000, 40001)], [(20, 25)])
    assert spans == [(10, 25), (40000, 40001)]
    payload = encode_patch(bytes(chunk), spans)
    assert apply_patch(base, payload) == (bytes(chunk), spans)
    assert apply_patch(None, payload)[0][10:20] == b"x" * 10
    with pytest.raises(ObjectDamaged):
        apply_patch(base[:-1], payload)  # a base of another length
    with pytest.raises(ObjectDamaged):
        apply_patch(base, payload[:-1])  # truncated


def test_a_patch_this_process_read_before_and_that_is_gone_since_does_not_hide_the_chunk(tmp_path: Path) -> None:
    """A long-running process (the server, an NBD export) keeps the patches of the indexes it read; when one is
    collected since, the chunk is read from another index's patch of the same content, or whole."""
    folder, repo, first, second = _two_backups(tmp_path, "repo", True)
    fresh = _reopen(tmp_path, "repo", True)
    patched, whole = _index(fresh, second, "vda"), _index(fresh, first, "vda")
    content = fresh.get_chunk(patched[0])
    gone = PatchRef(whole[0], b"\x07" * 32)  # a patch collected since
    fresh.add_patched(patched[0], gone)
    assert fresh.patch_of(patched[0]) == gone and fresh.get_chunk(patched[0]) == content  # the other patch
    fresh.add_patched(whole[0], gone)  # the first backup's chunk, stored whole, once known as patched too
    assert fresh.has_chunk(whole[0]) and fresh.get_chunk(whole[0]) == repo.get_chunk(whole[0])


def test_changed_bytes_written_over_a_parent_chunk_land_where_they_belong() -> None:
    """The merge writes each changed extent over the parent's bytes in one copy; extents out of order or
    overlapping (which a disk's normalized changes never are) still come out as writing them one by one."""
    from genievm_core.engine.backup import _written_over

    rng = random.Random(3)
    for _ in range(500):
        size = rng.randrange(1, 5000)
        base = os.urandom(size)
        starts = [rng.randrange(size) for _ in range(rng.randrange(6))]
        patches = [(at, os.urandom(rng.randrange(size - at + 1))) for at in starts]
        if rng.random() < 0.5:
            patches.sort()
        expected = bytearray(base)
        for at, data in patches:
            expected[at : at + len(data)] = data
        assert _written_over(base, patches) == bytes(expected)
