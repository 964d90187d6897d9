"""Objects GenieVM never wrote, in any folder of a filesystem repository: every command skips them with a
warning, verify reports each as a finding, gc never deletes one (issue 15, defect 1).

The S3 plugin's tests run the same through a real S3 server (plugins/genievm_storage_s3/tests).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from support import CHUNK, CLIResult, random_bytes, write_image

from genievm_core.repository.layout import is_known_key, unknown_keys

Cli = Callable[..., CLIResult]

STRAYS = {
    "manifests/zzjunk": b"junk\n",
    "manifests/20260101T000000.000000Z-0000000g": b"almost a backup id\n",
    "chunks/zzjunk": b"junk\n",
    "chunks/ab/abcd": b"hex, but no chunk id\n",
    "chunks/00/" + "ab" * 32: b"a chunk id under the wrong folder\n",
    "indexes/zzjunk": b"junk\n",
    "indexes/not-a-backup/vda": b"junk\n",
    "gc/notes.txt": b"junk\n",
    "log/zzjunk": b"junk\n",
    "zzjunk": b"junk at the root\n",
    "photos/cat.jpg": b"a folder of someone else's\n",
}


def test_the_layout_knows_every_object_genievm_writes() -> None:
    backup_id = "20260101T000000.000000Z-0123abcd"
    known = ["config", "gc/pending", f"manifests/{backup_id}", f"indexes/{backup_id}/vda", f"log/{backup_id}",
             "chunks/ab/ab" + "0" * 62, "locks/" + "f" * 32]  # fmt: skip
    assert all(is_known_key(k) for k in known)
    assert unknown_keys([*known, *STRAYS]) == sorted(STRAYS)


def test_stray_objects_are_reported_skipped_and_never_collected(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    image = write_image(tmp_path / "vda.img", 4 * CHUNK, [(0, random_bytes(2 * CHUNK, 3))])
    assert cli("repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)).code == 0
    first = cli("backup", "--vm", "web01", "--repo", str(repo), "--disk", f"vda={image}")
    assert first.code == 0, first.stderr
    for key, data in STRAYS.items():
        (repo / key).parent.mkdir(parents=True, exist_ok=True)
        (repo / key).write_bytes(data)

    counted = cli("repo", "stats", str(repo), "--json")
    assert counted.code == 0, counted.stderr
    assert json.loads(counted.stdout)["chunk_objects"] == 2, "strays under chunks/ are no chunks"

    listed = cli("backups", "list", "--repo", str(repo))
    assert listed.code == 0, listed.stderr
    assert "web01" in listed.stdout and "zzjunk" not in listed.stdout
    assert any("manifests/zzjunk is not a GenieVM object" in w for w in listed.warnings), listed.stderr

    again = cli("backup", "--vm", "web01", "--repo", str(repo), "--disk", f"vda={image}")
    assert again.code == 0, again.stderr
    restored = cli("restore", "--vm", "web01", "--repo", str(repo), "--target", str(tmp_path / "out"))
    assert restored.code == 0, restored.stderr
    assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()

    verified = cli("verify", "--repo", str(repo))
    assert verified.code == 22, verified.stderr  # VerifyError: the strays are findings
    for key in STRAYS:
        assert f"{key} is not a GenieVM object" in verified.stdout, key
    assert "web01" not in verified.err_lines[0] and "repository" in verified.err_lines[0]
    assert cli("verify", "--repo", str(repo), "--vm", "web01").code == 0  # one VM's backups: fine

    collected = cli("gc", "--repo", str(repo), "--grace", "0")
    assert collected.code == 0, collected.stderr
    assert any("chunks/ab/abcd is not a GenieVM object" in w for w in collected.warnings), collected.stderr
    assert {k: (repo / k).read_bytes() for k in STRAYS} == STRAYS
