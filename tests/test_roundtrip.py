"""Backup then restore gives byte-identical disks, and holes stay holes.

Real sparse image files, the real image provider, a real repository in a
folder; chunks of 64 KiB so that a few hundred KiB make many chunks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    CHUNK,
    RepoFactory,
    backup_vm,
    random_bytes,
    restore_vm,
    stray_files,
    text_bytes,
    write_image,
)

from genievm_core.engine import DiskProgress
from genievm_core.errors import RestoreTargetExistsError
from genievm_core.jobs import run_backup
from genievm_core.models.config import BackupConfig, DiskConfig
from genievm_core.plugin import PluginHost
from genievm_core.repository import ZERO_ID, Repository
from genievm_core.repository.storage import open_storage


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def repo(request: pytest.FixtureRequest, new_repo: RepoFactory) -> Repository:
    return new_repo(encrypted=request.param)[0]


def test_sparse_unaligned_image_round_trip(host: PluginHost, repo: Repository, tmp_path: Path) -> None:
    size = 40 * CHUNK + 12345  # unaligned: the last chunk is short
    layout = [
        (0, text_bytes(4096)),  # compressible, start of the disk
        (3 * CHUNK - 2048, random_bytes(8192, 1)),  # crosses the boundary of chunks 2 and 3
        (20 * CHUNK, random_bytes(CHUNK, 2)),  # exactly chunk 20
        (size - 5000, random_bytes(5000, 3)),  # in the short last chunk, up to the end
    ]
    image = write_image(tmp_path / "vda.img", size, layout)
    manifest = backup_vm(host, repo, "vm1", {"vda": image})

    (disk,) = manifest.disks
    assert (disk.name, disk.size, disk.chunk_size, disk.chunk_count) == ("vda", size, CHUNK, 41)
    stored = {0, 2, 3, 20, 40}  # chunks holding data; every other one is a hole
    assert disk.stats.chunks_new == len(stored)
    assert disk.stats.chunks_zero == 41 - len(stored)
    assert disk.stats.bytes_scanned == size
    # holes are never read: what is read is the allocated data, block-rounded by the filesystem
    assert disk.stats.bytes_read < 8 * CHUNK
    assert disk.cbt.mode == "full" and manifest.kind == "full" and manifest.parent_id is None
    index = repo.get_index(disk.index)
    assert {i for i, cid in enumerate(index) if cid != ZERO_ID} == stored

    result = restore_vm(host, repo, "vm1", tmp_path / "out")
    restored = tmp_path / "out" / "vda.img"
    assert result.disks == ["vda"] and result.verified and result.backup_id == manifest.backup_id
    assert restored.read_bytes() == image.read_bytes()
    assert stray_files(tmp_path / "out") == []


def test_restored_images_stay_sparse(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    size = 16 << 20
    image = write_image(tmp_path / "big.img", size, [(1 << 20, random_bytes(4096, 1)), (9 << 20, text_bytes(100))])
    repo, _ = new_repo()
    backup_vm(host, repo, "vm1", {"vda": image})
    restore_vm(host, repo, "vm1", tmp_path / "out")
    restored = tmp_path / "out" / "vda.img"
    assert restored.stat().st_size == size
    assert restored.read_bytes() == image.read_bytes()
    # two small islands of data: a few blocks, not 16 MiB (and not even two whole chunks)
    assert allocated_bytes(restored) <= 2 * CHUNK, f"{allocated_bytes(restored)} bytes allocated"


def test_small_and_empty_disks_and_several_disks(host: PluginHost, repo: Repository, tmp_path: Path) -> None:
    disks = {
        "vda": write_image(tmp_path / "a.img", 3 * CHUNK, [(0, random_bytes(3 * CHUNK, 1))]),  # all data
        "vdb": write_image(tmp_path / "b.img", 1000, [(10, b"tiny disk, smaller than a chunk")]),
        "vdc": write_image(tmp_path / "c.img", 0),  # empty
        "vdd": write_image(tmp_path / "d.img", 5 * CHUNK + 1),  # only a hole
        "vde": write_image(tmp_path / "e.img", 1, [(0, b"\x07")]),  # one byte
    }
    manifest = backup_vm(host, repo, "vm2", disks, max_concurrent_disks=3)
    records = {d.name: d for d in manifest.disks}
    assert sorted(records) == sorted(disks)
    assert {n: r.chunk_count for n, r in records.items()} == {"vda": 3, "vdb": 1, "vdc": 0, "vdd": 6, "vde": 1}
    assert records["vdd"].stats.chunks_new == 0 and records["vdd"].stats.bytes_read == 0
    assert records["vdc"].stats == records["vdc"].stats.__class__()
    assert manifest.stats.chunks_new == sum(r.stats.chunks_new for r in records.values()) == 5

    result = restore_vm(host, repo, "vm2", tmp_path / "out")
    assert sorted(result.disks) == sorted(disks)
    for name, source in disks.items():
        restored = tmp_path / "out" / f"{name}.img"
        assert restored.stat().st_size == source.stat().st_size, name
        assert restored.read_bytes() == source.read_bytes(), name


def test_the_vm_configuration_is_kept(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    repo, _ = new_repo()
    image = write_image(tmp_path / "vda.img", CHUNK, [(0, b"x")])
    manifest = backup_vm(host, repo, "web01", {"vda": image})
    stored = repo.get_manifest(manifest.backup_id)
    assert stored == manifest
    assert (stored.vm.id, stored.vm.provider, stored.vm.config_format) == ("web01", "image", "image-json")
    assert stored.vm.summary == {"disks": 1}
    assert stored.started_at <= stored.finished_at


def test_excluded_and_skipped_disks(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    repo, _ = new_repo()
    disks = {n: write_image(tmp_path / f"{n}.img", CHUNK, [(0, n.encode() * 100)]) for n in ("vda", "vdb", "vdc")}
    manifest = backup_vm(host, repo, "vm", disks, excluded_disks=("vdb",))
    assert [d.name for d in manifest.disks] == ["vda", "vdc"]

    other = tmp_path / "elsewhere" / "third.raw"
    restore_vm(
        host,
        repo,
        "vm",
        tmp_path / "out",
        disk_configs=(DiskConfig(name="vda", skip=True), DiskConfig(name="vdc", target=str(other))),
    )
    assert not (tmp_path / "out" / "vda.img").exists()
    assert other.read_bytes() == disks["vdc"].read_bytes()


def test_restore_never_overwrites_without_force(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    repo, _ = new_repo()
    image = write_image(tmp_path / "vda.img", 2 * CHUNK, [(100, random_bytes(1000, 5))])
    backup_vm(host, repo, "vm", {"vda": image})
    target = tmp_path / "out" / "vda.img"
    target.parent.mkdir()
    target.write_bytes(b"precious")
    with pytest.raises(RestoreTargetExistsError, match="--force"):
        restore_vm(host, repo, "vm", tmp_path / "out")
    assert target.read_bytes() == b"precious"
    assert stray_files(tmp_path / "out") == []
    restore_vm(host, repo, "vm", tmp_path / "out", force=True)
    assert target.read_bytes() == image.read_bytes()


# ---------------------------------------------------------------- property: any layout round-trips

layouts = st.lists(
    st.tuples(st.integers(0, 12 * CHUNK), st.integers(1, 2 * CHUNK), st.sampled_from(["random", "text", "zero"])),
    max_size=5,
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[PluginHost, Repository, Path]:
    root = tmp_path_factory.mktemp("roundtrip-prop")
    host = PluginHost()
    repo = Repository.init(open_storage(host, str(root / "repo")), passphrase=None, chunk_size=CHUNK)
    return host, repo, root


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(0, 14 * CHUNK), layout=layouts, seed=st.integers(0, 1 << 16))
def test_any_image_round_trips(
    shared: tuple[PluginHost, Repository, Path], size: int, layout: list[tuple[int, int, str]], seed: int
) -> None:
    host, repo, root = shared
    with tempfile.TemporaryDirectory(dir=root) as work:
        parts = []
        for n, (offset, length, kind) in enumerate(layout):
            offset, length = min(offset, size), min(length, max(0, size - offset))
            data = {"random": random_bytes, "text": text_bytes, "zero": lambda k, _s: bytes(k)}[kind](length, seed + n)
            parts.append((offset, data))
        image = write_image(Path(work) / "disk.img", size, parts)
        vm = f"vm{seed}-{size}"
        manifest = backup_vm(host, repo, vm, {"vda": image}, incremental=False)
        restore_vm(host, repo, vm, Path(work) / "out", backup_id=manifest.backup_id)
        assert (Path(work) / "out" / "vda.img").read_bytes() == image.read_bytes()


def test_progress_is_reported_per_disk(host: PluginHost, new_repo: RepoFactory, tmp_path: Path) -> None:
    repo, _ = new_repo()
    disks = {
        "vda": write_image(tmp_path / "a.img", 5 * CHUNK + 7, [(CHUNK, random_bytes(CHUNK, 1))]),
        "vdb": write_image(tmp_path / "b.img", 2 * CHUNK, [(0, text_bytes(2 * CHUNK))]),
    }
    events: list[DiskProgress] = []
    cfg = BackupConfig(
        vm_id="vm", backup_path=repo.url, provider_options={"vms": {"vm": {n: str(p) for n, p in disks.items()}}}
    )
    run_backup(host, cfg, repo, progress=lambda p: events.append(DiskProgress(**vars(p))), workers=2)
    for name, path in disks.items():
        mine = [e for e in events if e.disk == name]
        assert mine[-1].done and not any(e.done for e in mine[:-1])
        last = mine[-1]
        assert last.total == last.scanned == path.stat().st_size
        assert last.scanned == last.new + last.deduplicated + last.zero
        assert [e.scanned for e in mine] == sorted(e.scanned for e in mine)
    assert {e.disk for e in events} == set(disks)
