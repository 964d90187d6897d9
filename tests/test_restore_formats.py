"""Restoring to files in either format the engine writes, raw or qcow2, whatever provider made the backup
(issue 15, defect 6; a KVM backup's case is in plugins/genievm_kvm/tests/test_fallbacks.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import CHUNK, CLIResult, random_bytes, stray_files, text_bytes, write_image

Cli = Callable[..., CLIResult]
pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is not installed")


def backed_up(cli: Cli, tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    repo = tmp_path / "repo"
    disks = {
        "vda": write_image(
            tmp_path / "vda.img", 64 * CHUNK + 512, [(0, random_bytes(2 * CHUNK, 1)), (50 * CHUNK, text_bytes(CHUNK))]
        ),
        "vdb": write_image(tmp_path / "vdb.img", 3 * CHUNK, [(CHUNK, random_bytes(CHUNK, 2))]),
    }
    assert cli("repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)).code == 0
    made = cli("backup", "--vm", "web01", "--repo", str(repo), *(f"--disk={n}={p}" for n, p in disks.items()))
    assert made.code == 0, made.stderr
    return repo, disks


def qemu_img(*args: str) -> bytes:
    return subprocess.run(["qemu-img", *args], capture_output=True, check=True).stdout


def test_disks_restore_as_qcow2_files_sparse_and_exact(cli: Cli, tmp_path: Path) -> None:
    repo, disks = backed_up(cli, tmp_path)
    out = tmp_path / "out"
    formats = ["--disk-format", "vda=qcow2", "--disk-format", "vdb=raw"]
    restored = cli("restore", "--vm", "web01", "--repo", str(repo), "--target", str(out), *formats, "--json")
    assert restored.code == 0, restored.stderr
    assert json.loads(restored.stdout)["verified"] is True
    assert sorted(p.name for p in out.iterdir()) == ["vda.qcow2", "vdb.img"]
    info = json.loads(qemu_img("info", "--output=json", str(out / "vda.qcow2")))
    assert info["format"] == "qcow2" and info["virtual-size"] == disks["vda"].stat().st_size
    assert info["actual-size"] < 16 * CHUNK, "holes stay holes (3 chunks of data, qcow2's own tables)"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", str(out / "vda.qcow2"), str(tmp_path / "back.raw"))
    assert (tmp_path / "back.raw").read_bytes() == disks["vda"].read_bytes()
    assert (out / "vdb.img").read_bytes() == disks["vdb"].read_bytes()
    assert stray_files(tmp_path) == []


def test_without_qemu_img_a_qcow2_restore_stops_before_writing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = backed_up(cli, tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # the one way to hide an installed program
    out = tmp_path / "out"
    result = cli("restore", "--vm", "web01", "--repo", str(repo), "--target", str(out), "--disk-format", "vda=qcow2")
    assert result.code == 5, result.stderr
    assert result.err_lines == [
        "genievm: error: provider image: disk vda: writing qcow2 needs qemu-img (Debian package qemu-utils), which "
        "is not installed; restore it as raw, or install qemu-img"
    ]
    assert not out.exists() or list(out.iterdir()) == []
