"""The core chooses the CBT source of each disk from the registry: by ``supports`` and priority,
with the sources a disk source offers in place of registered ones of the same name.

The third-party sources come from a separate plugin (tests/tracking_plugin.py) registered
through its hook; the providers are real (the dirvm example's, the built-in ``image``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genievm_dirvm.checks import make_vm_folder, patch
from structlog.testing import capture_logs
from support import backup_vm, random_bytes, restore_vm, write_image
from tracking_plugin import TrackingPlugin

from genievm_core.engine.cbt_choice import choose_cbt_source
from genievm_core.jobs import run_backup
from genievm_core.models.config import BackupConfig
from genievm_core.models.extents import Extent
from genievm_core.models.manifest import BackupManifest
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import BoundCBTSource, ChangedExtents
from genievm_core.repository import Repository

CHUNK = 65536
KiB = 1024


def _dirvm_backup(host: PluginHost, repo: Repository, folder: Path) -> BackupManifest:
    config = BackupConfig(vm_id="web01", backup_path=repo.url, provider="dirvm", provider_options={"root": str(folder)})
    return run_backup(host, config, repo, workers=2)


def test_a_third_party_source_is_chosen_for_the_disks_it_supports_and_not_for_others(
    new_repo: Any, tmp_path: Path
) -> None:
    plugin = TrackingPlugin()
    host = PluginHost(extra_plugins=[("tracking", plugin)])
    assert [s.name for s in host.cbt_sources.by_priority()][:2] == ["vdb-blockhash", "broken-array"]
    repo, _ = new_repo()
    folder = make_vm_folder(tmp_path / "vms")
    first = _dirvm_backup(host, repo, folder)
    assert plugin.vdb.asked == []  # no parent: nothing to ask
    patch(folder / "web01-vda.img", 600 * KiB, b"\xaa" * 10)
    patch(folder / "web01-vdb.img", 70 * KiB, b"\xbb" * 10)
    with capture_logs() as logs:
        second = _dirvm_backup(host, repo, folder)

    cbt = {d.name: d.cbt for d in second.disks}
    assert (cbt["vdb"].mode, cbt["vdb"].source) == ("cbt", "vdb-blockhash")
    assert (cbt["vda"].mode, cbt["vda"].source) == ("cbt", "dirvm-blockhash")  # priority 50 did not support vda
    assert plugin.vdb.asked == ["vdb"] and plugin.array.asked == []
    chosen = {e["disk"]: e["source"] for e in logs if e["event"] == "backup.cbt_source"}
    assert chosen == {"vda": "dirvm-blockhash", "vdb": "vdb-blockhash"}
    assert second.parent_id == first.backup_id and second.stats.chunks_unchanged > 0
    assert {d.name: d.stats.bytes_scanned for d in second.disks} == {"vda": CHUNK, "vdb": CHUNK}
    restored = tmp_path / "restored"
    config = {"provider": "image", "new_vm_name": "copy"}
    restore_vm(host, repo, "web01", restored, **config)
    for disk in ("vda", "vdb"):
        assert (restored / f"{disk}.img").read_bytes() == (folder / f"web01-{disk}.img").read_bytes()


def test_a_chosen_source_that_fails_falls_back_to_hash_compare_with_its_reason(new_repo: Any, tmp_path: Path) -> None:
    plugin = TrackingPlugin()
    host = PluginHost(extra_plugins=[("tracking", plugin)])
    repo, _ = new_repo()
    disks = {
        "vda": write_image(tmp_path / "web01-array.img", 4 * CHUNK, [(0, random_bytes(4 * CHUNK, 1))]),
        "vdb": write_image(tmp_path / "web01-local.img", 2 * CHUNK, [(0, random_bytes(2 * CHUNK, 2))]),
    }
    backup_vm(host, repo, "web01", disks)
    with capture_logs() as logs:
        second = backup_vm(host, repo, "web01", disks)

    cbt = {d.name: d.cbt for d in second.disks}
    assert cbt["vda"].mode == "hash-compare" and cbt["vda"].source is None
    assert "the array answered 503" in (cbt["vda"].reason or "")
    # no source supports vdb: the image provider's disk source answers, as it always did
    assert (cbt["vdb"].mode, cbt["vdb"].reason) == ("hash-compare", "the image provider has no changed-block tracking")
    assert plugin.array.asked == ["vda"]
    fallbacks = {e["disk"]: e["log_level"] for e in logs if e["event"] == "backup.cbt_fallback"}
    assert fallbacks == {"vda": "warning", "vdb": "info"}
    assert second.stats.chunks_new == 0 and second.kind == "incremental"


class _Standalone:
    """A source as registered: answers from a ``DiskInfo`` alone."""

    name = "kind-a"
    priority = 10

    def supports(self, disk: DiskInfo) -> bool:
        return disk.storage_kind == "raw-file"

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        return ChangedExtents.unavailable("standalone")


def test_an_offered_source_takes_the_place_of_the_registered_one_of_its_name() -> None:
    registered = _Standalone()
    bound = BoundCBTSource(registered, lambda token: ChangedExtents([Extent(0, 512)], None))
    raw = DiskInfo("vda", 1 << 20, "raw-file")
    qcow2 = DiskInfo("vdb", 1 << 20, "qcow2-file")
    assert choose_cbt_source(raw, [registered]) is registered
    chosen = choose_cbt_source(raw, [registered], [bound])
    assert chosen is bound and (chosen.name, chosen.priority) == ("kind-a", 10)
    assert chosen.changed_extents(raw, "t").extents == [Extent(0, 512)]
    assert choose_cbt_source(qcow2, [registered], [bound]) is None  # the bound source keeps the registered supports
