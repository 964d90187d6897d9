"""When an incremental cannot be made, the backup compares chunk ids instead, warns, and says why in the manifest."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs
from support import backup_vm, random_bytes, restore_vm, write_image

from genievm_core.builtin.image import ImageDiskSource, ImageProvider, _ImageBackup
from genievm_core.errors import CBTError
from genievm_core.models.vm import VMDescription
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import BackupRequest, ChangedExtents
from genievm_core.repository import Repository

CHUNK = 65536


class TokenRefusingSourceDouble(ImageDiskSource):
    """A real image file whose CBT hands out a token and then rejects it, as after a changeId reset.

    A test double: no CBT source of the core runs here (the KVM and VMware ones are plugins).
    """

    def changed_extents(self, token: str | None) -> ChangedExtents:
        if token is None:
            return ChangedExtents.unavailable("no token yet")
        raise CBTError(f"changed-block tracking failed for disk {self.info.name}: token {token} was rejected")

    def next_token(self) -> str | None:
        return "change-id-1"


class TokenRefusingProviderDouble(ImageProvider):
    @contextmanager
    def open_backup(self, vm: VMDescription, request: BackupRequest) -> Iterator[Any]:
        sources = {d.name: TokenRefusingSourceDouble(d) for d in vm.disks if d.name in request.disks}
        try:
            yield _ImageBackup(sources)  # type: ignore[arg-type]
        finally:
            for source in sources.values():
                source.close()


def changed_twice(tmp_path: Path) -> tuple[Path, Mapping[str, Path]]:
    image = write_image(tmp_path / "vda.img", 8 * CHUNK, [(0, random_bytes(8 * CHUNK, 1))])
    return image, {"vda": image}


def test_a_rejected_cbt_token_falls_back_to_hash_compare(new_repo: Any, tmp_path: Path) -> None:
    host = PluginHost()
    host.providers.add("refusing", TokenRefusingProviderDouble)
    repo, _ = new_repo()
    image, disks = changed_twice(tmp_path)
    first = backup_vm(host, repo, "web01", disks, provider="refusing")
    assert first.disks[0].cbt.token == "change-id-1"
    with open(image, "r+b") as f:
        f.seek(3 * CHUNK)
        f.write(random_bytes(CHUNK, 2))
    with capture_logs() as logs:
        second = backup_vm(host, repo, "web01", disks, provider="refusing")

    cbt = second.disks[0].cbt
    assert cbt.mode == "hash-compare" and "token change-id-1 was rejected" in (cbt.reason or "")
    assert second.kind == "incremental" and second.parent_id == first.backup_id
    assert second.stats.chunks_new == 1 and second.stats.bytes_read == 8 * CHUNK
    assert [e["log_level"] for e in logs if e["event"] == "backup.cbt_fallback"] == ["warning"]
    restore_vm(host, repo, "web01", tmp_path / "out")
    assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()


def test_a_missing_parent_index_falls_back_to_a_full_read(host: PluginHost, new_repo: Any, tmp_path: Path) -> None:
    repo: Repository
    repo, _ = new_repo()
    image, disks = changed_twice(tmp_path)
    first = backup_vm(host, repo, "web01", disks)
    repo.storage.delete(first.disks[0].index)
    with capture_logs() as logs:
        second = backup_vm(host, repo, "web01", disks)
    cbt = second.disks[0].cbt
    assert cbt.mode == "full" and cbt.reason == "the parent's index is missing or damaged"
    assert second.stats.chunks_new == 0 and second.stats.chunks_deduplicated == 8  # the chunks are still there
    assert any(e["event"] == "backup.parent_index_unusable" and e["log_level"] == "warning" for e in logs)
