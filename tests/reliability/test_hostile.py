"""Hostile repositories: manifests and indexes written to mislead a restore are refused before anything is written.

Each case rewrites one object of a real repository (an unencrypted one, where
anyone with write access to the storage can forge objects; an encrypted
repository authenticates them all) and runs ``genievm restore`` into a fresh
folder: the exit code and the start of the one error line are checked, and
the target folder, and the folder around it, must hold nothing new.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from support import CHUNK, CLIResult, backup_vm, random_bytes, write_image

from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.storage import open_storage

Cli = Callable[..., CLIResult]
Edit = Callable[[Repository, str, dict[str, Any]], None]


def put_manifest(repo: Repository, backup_id: str, raw: dict[str, Any] | bytes) -> None:
    key = f"manifests/{backup_id}"
    data = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    repo.storage.put(key, repo.codec.encode(key, data))


def put_raw_manifest(repo: Repository, backup_id: str, payload: bytes, compression: int) -> None:
    """A manifest object whose payload is given as is (e.g. a zstd frame made elsewhere)."""
    repo.storage.put(f"manifests/{backup_id}", b"GVMO" + bytes((1, compression, 0, 0)) + payload)


def put_index(repo: Repository, key: str, chunk_size: int, disk_size: int, count: int, entries: bytes) -> None:
    header = struct.pack("<4sB3xQQQ", b"GVMI", 1, chunk_size, disk_size, count)
    repo.storage.put(key, repo.codec.encode(key, header + entries))


def disk0(raw: dict[str, Any]) -> dict[str, Any]:
    disk: dict[str, Any] = raw["disks"][0]
    return disk


def index_entries(repo: Repository, raw: dict[str, Any]) -> bytes:
    return repo.get_index(disk0(raw)["index"]).to_bytes()[32:]


def _traversal_index(repo: Repository, bid: str, raw: dict[str, Any]) -> None:
    disk0(raw)["index"] = "indexes/../config"
    put_manifest(repo, bid, raw)


def _beyond_the_disk(repo: Repository, bid: str, raw: dict[str, Any]) -> None:
    """The index claims a disk twice as big (offsets past the manifest's size); checksum made to match."""
    import blake3

    entries = index_entries(repo, raw)
    entries += entries
    put_index(repo, disk0(raw)["index"], CHUNK, 2 * disk0(raw)["size"], 2 * disk0(raw)["chunk_count"], entries)
    disk0(raw)["checksum"] = blake3.blake3(entries).hexdigest()
    put_manifest(repo, bid, raw)


def _manifest_says_beyond(repo: Repository, bid: str, raw: dict[str, Any]) -> None:
    disk0(raw)["size"] *= 1000
    disk0(raw)["chunk_count"] *= 1000
    put_manifest(repo, bid, raw)


def _wrong_length_index(repo: Repository, bid: str, raw: dict[str, Any]) -> None:
    entries = index_entries(repo, raw)
    put_index(repo, disk0(raw)["index"], CHUNK, disk0(raw)["size"], disk0(raw)["chunk_count"], entries[:-32])


def _index_chunk_size(repo: Repository, bid: str, raw: dict[str, Any]) -> None:
    entries = index_entries(repo, raw)
    put_index(repo, disk0(raw)["index"], 2 * CHUNK, disk0(raw)["size"], disk0(raw)["chunk_count"], entries)


def _zstd_bomb(repo: Repository, bid: str, raw: dict[str, Any]) -> None:
    """A 20 KiB object that decompresses to 600 MiB of JSON."""
    text = json.dumps(raw).encode()
    padded = text[:-1] + b"," + b'"tags": {"x": "' + b"a" * (600 << 20) + b'"}}'
    put_raw_manifest(repo, bid, zstandard.ZstdCompressor(level=3).compress(padded), 1)


def _deep_json(repo: Repository, bid: str, raw: dict[str, Any]) -> None:
    put_manifest(repo, bid, b"[" * 200_000 + b"]" * 200_000)


def _duplicate_disk(repo: Repository, bid: str, raw: dict[str, Any]) -> None:
    raw["disks"] = [raw["disks"][0], raw["disks"][0]]
    put_manifest(repo, bid, raw)


def edit(**changes: Any) -> Edit:
    def apply(repo: Repository, bid: str, raw: dict[str, Any]) -> None:
        for path, value in changes.items():
            node = raw
            *parents, last = path.split("__")
            for part in parents:
                node = node[int(part)] if part.isdigit() else node[part]
            node[last] = value
        put_manifest(repo, bid, raw)

    return apply


CASES: dict[str, tuple[Edit, int, str]] = {
    "disk-name-traversal": (edit(disks__0__name="../../escaped"), 21, "is corrupt: disks.0.name"),
    "disk-name-absolute": (edit(disks__0__name="/etc/passwd"), 21, "is corrupt: disks.0.name"),
    "vm-id-traversal": (edit(vm__id="../../escaped"), 21, "is corrupt: vm.id"),
    "vm-name-traversal": (edit(vm__name="../../escaped"), 21, "is corrupt: vm.name"),
    "index-key-traversal": (_traversal_index, 21, "is corrupt"),
    "index-of-another-backup": (edit(disks__0__index="indexes/20200101T000000.000000Z-00000000/vda"), 21, "is corrupt"),
    "absurd-disk-size": (edit(disks__0__size=1 << 62), 21, "is corrupt: disks.0.size"),
    "negative-disk-size": (edit(disks__0__size=-1), 21, "is corrupt: disks.0.size"),
    "size-beyond-the-index": (_manifest_says_beyond, 21, "is corrupt"),
    "index-beyond-the-disk": (_beyond_the_disk, 21, "is corrupt"),
    "index-wrong-length": (_wrong_length_index, 21, "is corrupt"),
    "index-other-chunk-size": (_index_chunk_size, 21, "is corrupt"),
    "chunk-size-mismatch": (edit(disks__0__chunk_size=CHUNK * 2), 21, "is corrupt"),
    "duplicate-disk": (_duplicate_disk, 21, "is corrupt"),
    "unknown-format-version": (edit(format_version=99), 16, "has format 99"),
    "unknown-field": (edit(requires=["sparse-v2"]), 21, "is corrupt: requires: Extra inputs"),
    "unknown-cbt-mode": (edit(disks__0__cbt={"mode": "magic"}), 21, "is corrupt"),
    "oversized-json": (edit(tags={"x": "a" * (17 << 20)}), 21, "is corrupt: zstd frame claims"),
    "zstd-bomb": (_zstd_bomb, 21, "is corrupt"),
    "deeply-nested-json": (_deep_json, 21, "is corrupt"),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, host: PluginHost) -> tuple[Path, str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("hostile")
    repo = Repository.init(open_storage(host, str(root / "repo")), passphrase=None, chunk_size=CHUNK)
    image = write_image(root / "vda.img", 4 * CHUNK + 512, [(0, random_bytes(2 * CHUNK, 1))])
    manifest = backup_vm(host, repo, "vm1", {"vda": image})
    raw = json.loads(
        repo.codec.decode(f"manifests/{manifest.backup_id}", repo.storage.get(f"manifests/{manifest.backup_id}"))
    )
    return root / "repo", manifest.backup_id, raw


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_repository_is_refused_before_anything_is_written(
    case: str, template: tuple[Path, str, dict[str, Any]], host: PluginHost, cli: Cli, tmp_path: Path
) -> None:
    import shutil

    source, bid, raw = template
    repo_path = tmp_path / "repo"
    shutil.copytree(source, repo_path)
    repo = Repository.open(open_storage(host, str(repo_path)))
    apply, code, fragment = CASES[case]
    apply(repo, bid, json.loads(json.dumps(raw)))
    around = tmp_path / "restore"
    around.mkdir()
    target = around / "target"

    result = cli("restore", "--vm", "vm1", "--backup", bid, "--repo", str(repo_path), "--target", str(target))
    assert result.code == code, result.stderr
    lines = result.err_lines
    assert len(lines) == 1 and lines[0].startswith("genievm: error: ") and fragment in lines[0], result.stderr
    assert list(around.iterdir()) == [], "something was written before the manifest was refused"
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "escaped-vda.img").exists()
    result = cli("verify", "--repo", str(repo_path))
    assert result.code in (16, 22), result.stderr  # verify names the backup, or refuses the newer format
