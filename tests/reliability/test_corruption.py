"""Random damage to a repository (hypothesis chooses): verify names exactly what is damaged, restore never lies.

The repository holds three backups: two of ``vm1`` (sharing most chunks) and
one of ``vm2`` with two disks. One object (a chunk, an index or a manifest) is
damaged in one way: a single bit flipped, the file truncated, or the file
deleted. Then:

- ``verify --read-data`` names exactly the backups and disks that use the
  damaged object (a damaged manifest names its backup, or, when it still
  reads, the disk whose record no longer fits; a deleted manifest leaves no
  trace to name: that backup is simply gone);
- restoring a damaged backup fails with a clear error and leaves no file;
- every undamaged backup still restores, byte for byte.

In an unencrypted repository nothing authenticates an index (a manifest has
its digest in the backup log), so a flipped bit may, rarely, leave an index
readable and meaning the same: then nothing may be reported, and every backup
must still restore exactly.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    CHUNK,
    PASSPHRASE,
    CLIResult,
    backup_vm,
    open_repo,
    patch_image,
    random_bytes,
    restore_vm,
    text_bytes,
)
from support import write_image as image

from genievm_core.errors import GenieVMError
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.storage import open_storage

Cli = Callable[..., CLIResult]
Where = tuple[str, str | None]  # (backup id, disk name or None for the whole backup)


class Template:
    """A repository with three backups, the disks' bytes at each backup, and which object each backup uses."""

    def __init__(self, root: Path, host: PluginHost, encrypted: bool) -> None:
        self.root, self.encrypted = root, encrypted
        self.passphrase = PASSPHRASE if encrypted else None
        repo = Repository.init(open_storage(host, str(root / "repo")), passphrase=self.passphrase, chunk_size=CHUNK)
        d = root / "disks"
        vm1 = {
            "vda": image(
                d / "a.img", 6 * CHUNK + 100, [(0, random_bytes(3 * CHUNK, 1)), (4 * CHUNK, text_bytes(CHUNK))]
            )
        }
        vm2 = {
            "vda": image(d / "b.img", 4 * CHUNK, [(CHUNK, random_bytes(2 * CHUNK, 2))]),
            "vdb": image(d / "c.img", 3 * CHUNK, [(0, text_bytes(3 * CHUNK, 3))]),
        }
        self.expected: dict[str, dict[str, bytes]] = {}
        self.vm: dict[str, str] = {}
        for vm, disks in (("vm1", vm1), ("vm2", vm2), ("vm1", vm1)):
            if vm == "vm1" and self.vm:
                patch_image(vm1["vda"], [(CHUNK + 7, random_bytes(100, 4))])  # the second backup changes one chunk
            manifest = backup_vm(host, repo, vm, disks)
            self.vm[manifest.backup_id] = vm
            self.expected[manifest.backup_id] = {name: path.read_bytes() for name, path in disks.items()}
        self.users: dict[str, set[Where]] = {}  # object key -> the (backup, disk) that need it
        for manifest in repo.manifests():
            bid = manifest.backup_id
            self.users[f"manifests/{bid}"] = {(bid, None)}
            for disk in manifest.disks:
                self.users[disk.index] = {(bid, disk.name)}
                for cid in repo.disk_index(disk).stored_ids():
                    self.users.setdefault(Repository.chunk_key(cid), set()).add((bid, disk.name))
        self.keys = sorted(self.users)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "encrypted"])
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, host: PluginHost) -> Template:
    return Template(tmp_path_factory.mktemp("corruption"), host, request.param)


def damage(path: Path, how: str, at: float) -> None:
    size = path.stat().st_size
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        os.truncate(path, int(size * at))  # 0 .. size - 1 bytes kept
    else:
        bit = int(size * 8 * at)
        data = bytearray(path.read_bytes())
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.floats(0, 1, exclude_max=True),
    kind=st.sampled_from(["chunks/", "indexes/", "manifests/"]),
    how=st.sampled_from(["flip", "truncate", "delete"]),
    at=st.floats(0, 1, exclude_max=True),
)
def test_random_damage_is_found_and_never_restored_silently(
    template: Template, host: PluginHost, cli: Cli, tmp_path_factory: pytest.TempPathFactory,
    which: float, kind: str, how: str, at: float,
) -> None:  # fmt: skip
    work = tmp_path_factory.mktemp("damaged")
    repo_path = work / "repo"
    shutil.copytree(template.root / "repo", repo_path)
    keys = [k for k in template.keys if k.startswith(kind)]
    key = keys[int(which * len(keys))]
    damage(repo_path / key, how, at)
    users = template.users[key]

    env = {"GENIEVM_PASSPHRASE": PASSPHRASE} if template.encrypted else {}
    result = cli("verify", "--repo", str(repo_path), "--read-data", "--json", env=env)
    reported = {(r["backup_id"], p["disk"]) for r in json.loads(result.stdout or "[]") for p in r["problems"]}
    if how == "delete" and kind == "manifests/":  # the backup log lists it (issue 15, defect 3)
        (gone,) = users
        assert result.code == 22 and reported == {("repository", None)}, result.stderr
        details = [p["detail"] for r in json.loads(result.stdout) for p in r["problems"]]
        assert len(details) == 1 and f"backup {gone[0]} is missing" in details[0], details
        assert gone[0] not in open_repo(host, repo_path, template.passphrase).backup_ids()
        damaged = {gone[0]}
    elif reported or template.encrypted or kind == "chunks/" or how != "flip":
        assert result.code == 22, result.stderr
        if kind == "manifests/":  # a manifest still readable after the damage names the disk it no longer fits
            assert {bid for bid, _ in reported} == {bid for bid, _ in users}, f"{how} {key}: verify named {reported}"
        else:
            assert reported == users, f"{how} {key}: verify named {reported}, expected {users}"
        damaged = {bid for bid, _ in users}
    else:  # plain manifest or index, a flip that left it readable and meaning the same: must restore exactly
        assert result.code == 0
        damaged = set()

    repo = open_repo(host, repo_path, template.passphrase)
    for bid, vm in template.vm.items():
        target = work / f"out-{bid}"
        if bid in damaged:
            with pytest.raises(GenieVMError):
                restore_vm(host, repo, vm, target, backup_id=bid)
            assert not target.exists() or not any(target.iterdir()), "a failed restore left files"
        else:
            restore_vm(host, repo, vm, target, backup_id=bid)
            for name, data in template.expected[bid].items():
                assert (target / f"{name}.img").read_bytes() == data, f"{bid} {name} restored wrong"
    shutil.rmtree(work)
